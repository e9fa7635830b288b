"""Distributed data-parallel training, mixed precision and activation checkpointing.

Launch: `torchrun --nproc_per_node N -m hade.train --data DIR --out RUN ...` (env:// rendezvous; gloo on
CPU, nccl on CUDA; multi-node works through torchrun's rendezvous, with the run directory on a file system
that every node sees).

Data: every rank builds the same `epoch_batches` order and takes the disjoint slice
[rank·b, (rank+1)·b) of each global batch of B = `batch_size` pairs (b = B / world_size; B must be
divisible by world_size · grad_accum_steps). The rank's DataLoader (hade.data.loader.StepBatchSampler)
yields only that slice of each micro-batch, so a rank never decodes the clips of another.

Loss (equal to single-process NT-Xent on the global batch). The head representations and clip ids of all
ranks are gathered with the gradient-preserving `torch.distributed.nn.functional.all_gather` (token
dimensions padded to the longest over ranks first). Rank r scores its b local texts against all B audios
(rows) and all B texts against its b local audios (columns) and takes

    L_r = (Σ_{i ∈ rows of r} CE_row_i + Σ_{j ∈ columns of r} CE_col_j) / B + aux(gathered) / W

so that Σ_r L_r = L (the single-process loss, auxiliary losses such as DCR's L_D/L_A computed on the
gathered, i.e. global, batch). Each rank back-propagates W·L_r: the all-gather's backward sums, on the
rank that owns a representation, the gradients that every rank's loss sends to it, and DDP then averages
the parameter gradients over the W ranks, so the result is (1/W)·∂(Σ_r W·L_r)/∂θ = ∂L/∂θ exactly. The
logged loss is the all-reduced Σ_r L_r = L.

Limitations: BatchNorm layers (HTSAT's bn0) normalise with per-rank batch statistics on CPU (converted to
SyncBatchNorm on CUDA, which uses global statistics); heads with `set_scoring` score the full B×B matrix on
every rank. With `grad_accum_steps` > 1 the contrastive negatives (and DCR batch statistics) come from the
micro-batch (B / grad_accum_steps pairs, over all ranks), not from the whole batch: accumulation saves
memory but optimises the mean of the micro-batch losses, not the loss of the global batch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hade.config import PRECISIONS
from hade.errors import InputError
from hade.losses import nt_xent_partial
from hade.models.heads.reprs import Reprs, slice_reprs


@dataclass
class DistContext:
    """This process's place in the job; world_size 1 (not enabled) in ordinary single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env() -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...), once."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("HADE_DIST_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, init_method="env://")
    return current()


def current() -> DistContext:
    """The context of an initialised process group, else single-process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per rank (cuda:LOCAL_RANK) when training distributed on CUDA."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def local_slice(index: list[int], ctx: DistContext) -> list[int]:
    """This rank's disjoint, deterministic share of a global batch of pair indices."""
    if len(index) % ctx.world_size:
        raise InputError(f"batch_size {len(index)} is not divisible by the {ctx.world_size} processes")
    size = len(index) // ctx.world_size
    return index[ctx.rank * size:(ctx.rank + 1) * size]


def micro_batches(index: list[int], steps: int) -> list[list[int]]:
    if steps < 1 or len(index) % steps:
        raise InputError(f"grad_accum_steps {steps} must be >= 1 and divide the per-process batch of {len(index)}")
    size = len(index) // steps
    return [index[k * size:(k + 1) * size] for k in range(steps)]


# ---- gathering ------------------------------------------------------------------------------
def _pad_dim1(t: torch.Tensor, length: int) -> torch.Tensor:
    if t.dim() < 2 or t.shape[1] == length:
        return t
    pad = [0, 0] * (t.dim() - 2) + [0, length - t.shape[1]]
    return F.pad(t, pad, value=False if t.dtype == torch.bool else 0)


def gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0; differentiable for float tensors."""
    if t.is_floating_point() and t.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(t.contiguous()), 0)
    src = t.to(torch.uint8) if t.dtype == torch.bool else t.contiguous()
    parts = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, src)
    out = torch.cat(parts, 0)
    return out.bool() if t.dtype == torch.bool else out


def gather_reprs(reprs: Reprs) -> Reprs:
    """Gather head representations of all ranks (gradients flow back to the owning rank); tensors of
    rank >= 2 are right-padded in dim 1 (tokens) to the longest over ranks, as `cat_reprs` pads."""
    keys = sorted(reprs)
    lengths = torch.tensor([reprs[k].shape[1] if reprs[k].dim() >= 2 else 0 for k in keys], dtype=torch.long,
                           device=next(iter(reprs.values())).device)
    dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
    out = {}
    for key, length in zip(keys, lengths.tolist()):
        t = reprs[key]
        if t.is_floating_point():
            t = t.float()  # gather (and score) in fp32 under autocast
        out[key] = gather_tensor(_pad_dim1(t, int(length)))
    return {k: out[k] for k in reprs}


def distributed_training_loss(model: nn.Module, batch: dict[str, Any], temperature: float,
                              ctx: DistContext) -> dict[str, torch.Tensor]:
    """This rank's share of the global-batch loss (see the module docstring).

    Returns {"nt_xent", aux..., "loss"}: the entries are this rank's parts L_r; "backward" (= W·L_r) is what
    to back-propagate."""
    audio = model.encode_audio(batch["audio"].to(model.device), batch.get("aux"))
    text = model.encode_text(batch["caption"])
    ids = batch["clip_index"].to(model.device)
    text_all, audio_all = gather_reprs(text), gather_reprs(audio)
    ids_all = gather_tensor(ids)
    b = ids.shape[0]
    start = ctx.rank * b
    text_loc, audio_loc = slice_reprs(text_all, start, start + b), slice_reprs(audio_all, start, start + b)
    rows = model.head.contrastive_scores(text_loc, audio_all)
    if model.head.capabilities.set_scoring:
        cols = {k: (s[:, start:start + b], w) for k, (s, w) in model.head.contrastive_scores(text_all, audio_all).items()}
    else:
        cols = model.head.contrastive_scores(text_all, audio_loc)
    losses = {f"nt_xent{suffix}": weight * nt_xent_partial(r.float(), cols[suffix][0].float(), temperature, ids_all, start)
              for suffix, (r, weight) in rows.items()}
    for name, value in model.head.aux_losses(text_all, audio_all).items():
        losses[name] = value / ctx.world_size
    losses["loss"] = sum(losses.values())
    losses["backward"] = losses["loss"] * ctx.world_size
    return losses


class LossModule(nn.Module):
    """What DDP wraps: the whole loss (encoders, gathering, scoring) runs inside forward, so that every
    parameter used (including a head's scoring parameters, e.g. DCR's CA MLP) is seen by DDP."""

    def __init__(self, model: nn.Module, temperature: float, ctx: DistContext) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.ctx = ctx

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return distributed_training_loss(self.model, batch, self.temperature, self.ctx)


def wrap_ddp(model: nn.Module, temperature: float, ctx: DistContext) -> nn.Module:
    if model.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [model.device.index] if model.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(LossModule(model, temperature, ctx), device_ids=ids,
                                               find_unused_parameters=True)


def reduce_losses(losses: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """Σ over ranks of the detached loss parts (= the single-process values on the global batch)."""
    names = [k for k in losses if k != "backward"]
    values = torch.stack([losses[k].detach().float() for k in names]).cpu()
    if ctx.enabled:
        dist.all_reduce(values)
    return dict(zip(names, values.tolist()))


# ---- precision, checkpointing, RNG -----------------------------------------------------------
def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision: expected fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise InputError("precision fp16 needs CUDA; use bf16 on CPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing of the encoders (HTSAT's Swin blocks, BERT's layers), non-reentrant."""
    if hasattr(model.audio_encoder, "set_grad_checkpointing"):
        model.audio_encoder.set_grad_checkpointing(True)
    bert = getattr(model.text_encoder, "bert", None)
    if bert is not None and hasattr(bert, "gradient_checkpointing_enable"):
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def all_rng_states(ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's CPU RNG state (rank order), for rank 0's checkpoint."""
    state = torch.get_rng_state()
    if not ctx.enabled:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, state)
    return states


def restore_rng(state: dict[str, Any], ctx: DistContext) -> None:
    """Each rank's own saved RNG state when the world size is unchanged; otherwise rank 0's state, reseeded
    by rank (r > 0) so that ranks keep distinct dropout masks."""
    states = state.get("torch_rng_ranks")
    if states is not None and len(states) == ctx.world_size:
        torch.set_rng_state(states[ctx.rank])
        return
    torch.set_rng_state(state["torch_rng"])
    if ctx.rank:
        torch.manual_seed(int(torch.randint(0, 2**62, (1,))) + ctx.rank)


@contextlib.contextmanager
def maybe_no_sync(module: nn.Module, skip_sync: bool) -> Iterator[None]:
    if skip_sync and isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield
