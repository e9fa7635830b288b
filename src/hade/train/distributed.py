"""Distributed data-parallel training and activation checkpointing (mixed precision: hade.train.precision;
the loss: hade.train.objective).

Launch: `torchrun --nproc_per_node N -m hade.train --data DIR --out RUN ...`, or `srun -n N python -m
hade.train ...` with MASTER_ADDR / MASTER_PORT exported (env:// rendezvous; rank and world size as
`hade.utils.launch` reads them for every parallel command; gloo on CPU, nccl on CUDA; multi-node works,
with the run directory on a file system that every node sees).

Data: every rank builds the same `epoch_batches` order and takes the disjoint slice
[rank·b, (rank+1)·b) of each global batch of B = `batch_size` pairs (b = B / world_size; B must be
divisible by world_size · grad_accum_steps). The rank's DataLoader (hade.data.loader.StepBatchSampler)
yields only that slice of each micro-batch, so a rank never decodes the clips of another.

Gradients: the loss (hade.train.objective) gathers the head representations of all ranks with the
gradient-preserving `torch.distributed.nn.functional.all_gather`; DDP (`wrap_ddp`) wraps the whole loss so
that every parameter it uses is seen, and averages parameter gradients over the W ranks.

Limitations: BatchNorm layers (HTSAT's bn0) normalise with per-rank batch statistics on CPU (converted to
SyncBatchNorm on CUDA, which uses global statistics). With `grad_accum_steps` > 1 the contrastive negatives
(and DCR batch statistics) come from the micro-batch (B / grad_accum_steps pairs, over all ranks), not from
the whole batch: accumulation saves memory but optimises the mean of the micro-batch losses, not the loss
of the global batch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from hade.errors import InputError
from hade.models.heads.reprs import Reprs
from hade.utils.launch import Launch, detect_launch, rank_device
from hade.utils.padding import pad_dim1


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
    """Join the process group of a torchrun or srun launch (`hade.utils.launch.detect_launch`), once.

    torchrun sets MASTER_ADDR / MASTER_PORT itself; under plain srun they must be exported to name rank 0's
    host and a free port (InputError otherwise)."""
    if dist.is_initialized():
        return current()
    launch = detect_launch()
    if not launch.parallel:
        return DistContext()
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise InputError(f"{launch.launcher}: rank {launch.rank} of {launch.world_size} needs {' and '.join(missing)} "
                         "to meet the other ranks; torchrun sets them, under srun export them, e.g. "
                         "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1) MASTER_PORT=29500")
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("HADE_DIST_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(rank_device("cuda", launch)))
    dist.init_process_group(backend=backend, init_method="env://", rank=launch.rank, world_size=launch.world_size)
    return current()


def current() -> DistContext:
    """The context of an initialised process group, else single-process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistContext()
    launch = detect_launch()
    local = launch.local_rank if launch.parallel else dist.get_rank()
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per rank when training distributed on CUDA: cuda:LOCAL_RANK, modulo the GPUs this process
    sees (`srun --gpus-per-task 1` shows each task its own GPU as cuda:0); see `rank_device`."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device(rank_device("cuda", Launch(ctx.rank, ctx.world_size, ctx.local_rank)))
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
def gather_tensor(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0 (rank order); differentiable for float
    tensors (the backward sums, on the owning rank, what every rank's loss sends back). One process: `t`."""
    if not ctx.enabled:
        return t
    if t.is_floating_point() and t.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(t.contiguous()), 0)
    src = t.to(torch.uint8) if t.dtype == torch.bool else t.contiguous()
    parts = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, src)
    out = torch.cat(parts, 0)
    return out.bool() if t.dtype == torch.bool else out


def gather_reprs(reprs: Reprs, ctx: DistContext) -> Reprs:
    """Gather head representations of all ranks (gradients flow back to the owning rank); tensors of
    rank >= 2 are right-padded in dim 1 (tokens) to the longest over ranks, as `cat_reprs` pads, and
    floating ones scored in float32. One process: `reprs` unchanged (the gather is the identity)."""
    if not ctx.enabled:
        return reprs
    keys = sorted(reprs)
    lengths = torch.tensor([reprs[k].shape[1] if reprs[k].dim() >= 2 else 0 for k in keys], dtype=torch.long,
                           device=next(iter(reprs.values())).device)
    dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
    out = {}
    for key, length in zip(keys, lengths.tolist()):
        t = reprs[key]
        if t.is_floating_point():
            t = t.float()  # gather (and score) in fp32 under autocast
        out[key] = gather_tensor(pad_dim1(t, int(length)), ctx)
    return {k: out[k] for k in reprs}


def wrap_ddp(objective: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP around the whole training objective (hade.train.objective.ContrastiveObjective, which holds the
    model as `.model`), so that every parameter the loss uses (including a head's scoring parameters, e.g.
    DCR's CA MLP) is seen by DDP; BatchNorm becomes SyncBatchNorm on CUDA."""
    device = objective.model.device
    if device.type == "cuda":
        objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)


def reduce_losses(losses: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """Σ over ranks of the detached loss parts (= the single-process values on the global batch)."""
    names = list(losses)
    values = torch.stack([losses[k].detach().float() for k in names]).cpu()
    if ctx.enabled:
        dist.all_reduce(values)
    return dict(zip(names, values.tolist()))


# ---- checkpointing, RNG ------------------------------------------------------------------------
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
