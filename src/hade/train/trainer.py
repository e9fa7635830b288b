"""Training loop: AdamW, warm-up + cosine, validation every epoch with best-checkpoint selection,
atomic checkpoints and true resume (model, optimiser, scheduler, RNG and data position).

Input is streamed (hade.data.loader): audio headers are checked up front, and DataLoader workers
(`num_workers`) decode, resample and crop each batch as it is needed, with a bounded per-process cache
(`audio_cache_mb`), so memory does not grow with the data set. Batches depend on (seed, epoch, pair)
only: the same whatever the number of workers, and the same after a resume.

Layout of a run directory:
    train_config.json            the TrainConfig of the run
    init.json                    what `init_from` loaded (fresh runs that start from existing weights)
    checkpoints/last/            model + train_state.pt (optimiser, scheduler, RNG, position)
    checkpoints/best/            the model with the best validation score
    metrics.json, curve.png      history of losses and validation metrics
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from hade.checkpoint import WEIGHTS_FILE, load_train_state, load_weights, save_model
from hade.config import TrainConfig, from_dict, to_dict
from hade.data.augment import CaptionAugmenter
from hade.data.captioner import build_captioner, with_aux_pairs
from hade.data.dataset import ClipAudioStore, TrainPairs
from hade.data.loader import StepBatchSampler, default_num_workers, step_groups, train_loader
from hade.data.readers import read_split
from hade.data.types import SplitData
from hade.errors import InputError
from hade.eval.evaluate import clip_samples, evaluate
from hade.losses import nt_xent
from hade.models.factory import create_model
from hade.models.retrieval import RetrievalModel
from hade.train import distributed as ddp
from hade.train.curves import plot_curves
from hade.train.init import initialise_from
from hade.train.schedule import param_groups, warmup_cosine
from hade.utils.atomic import recover_dir, remove_stale_temps, write_json_atomic


_PIPELINE_FIELDS = ("num_workers", "prefetch_factor", "audio_cache_mb")  # a resume may change these freely


@dataclass
class Progress:
    """Where a run stands; saved with every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # wall-clock seconds in the training loop over every (resumed) session


@dataclass
class _Loop:
    """What every step of a run works with (built once by Trainer.run)."""

    model: RetrievalModel
    wrapped: torch.nn.Module | None  # the DDP wrapper when several processes train
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: StepBatchSampler  # this rank's micro-batches of each epoch; set_epoch before iterating the loader
    loader: torch.utils.data.DataLoader  # yields collated micro-batches (decoded in worker processes)
    store: ClipAudioStore
    augmenter: CaptionAugmenter | None
    device: torch.device


def training_loss(model: RetrievalModel, batch: dict[str, Any], temperature: float) -> dict[str, torch.Tensor]:
    """L = L_S + Σ weighted auxiliary losses of the head (α L_D + β L_A for DCR); heads may add weighted
    contrastive terms on other score matrices (`contrastive_scores`, e.g. per part of a sum head).

    batch["aux"] (optional): one auxiliary caption (or None) per clip, for HCI+AC."""
    audio = model.encode_audio(batch["audio"].to(model.device), batch.get("aux"))
    text = model.encode_text(batch["caption"])
    ids = batch["clip_index"].to(model.device)
    losses = {f"nt_xent{suffix}": weight * nt_xent(scores, temperature, ids)
              for suffix, (scores, weight) in model.head.contrastive_scores(text, audio).items()}
    losses.update(model.head.aux_losses(text, audio))
    losses["loss"] = sum(losses.values())
    return losses


def epoch_losses(history: list[dict[str, Any]], epoch: int) -> list[float]:
    """The loss of every step of `epoch` recorded in `history`. Why the history and not a list kept by the
    loop: a resumed run restarts the loop mid-epoch, and its epoch loss must cover the steps done before
    the interruption too (the history is saved with every checkpoint)."""
    return [h["loss"] for h in history if h.get("epoch") == epoch and "loss" in h and "epoch_end" not in h]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: CUDA is not available on this machine")
    return device


def selection_score(metrics: dict[str, Any], metric: str) -> float:
    t2a, a2t = metrics["t2a"], metrics["a2t"]
    if metric == "t2a_r_sum":
        return t2a["R@1"] + t2a["R@5"] + t2a["R@10"]
    if metric == "r_sum":
        return sum(t2a[k] + a2t[k] for k in ("R@1", "R@5", "R@10"))
    if metric == "map10":
        return (t2a["mAP@10"] + a2t["mAP@10"]) / 2
    raise InputError(f"select_metric: expected t2a_r_sum, r_sum or map10, got {metric!r}")


class Trainer:
    def __init__(self, data_dir: str | Path, out_dir: str | Path, config: TrainConfig,
                 progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.config = config
        self.progress = progress
        self.log = log

    # ---- set-up -------------------------------------------------------------------------
    def _load_data(self, sample_rate: int, samples: int) -> tuple[ClipAudioStore, SplitData | None]:
        train_split = read_split(self.data_dir, "development")
        cfg = self.config
        self.aux_train: dict[str, str] | None = None
        self.aux_val: dict[str, str] | None = None
        if cfg.aux_captions:
            captioner = build_captioner(cfg.aux_captions, self.data_dir, "development", cfg.aux_error_rate, cfg.seed)
            self.aux_train = captioner.caption(train_split.clips)
            if cfg.aux_pairs:
                train_split = with_aux_pairs(train_split, self.aux_train)
        # Streaming: headers are checked up front (cheap), samples decoded by the loader's workers when a batch
        # needs them, with a bounded cache; clips that fail to decode then are replaced (TrainPairs.replace_bad).
        if isinstance(cfg.audio_cache_mb, bool) or not isinstance(cfg.audio_cache_mb, (int, float)) or cfg.audio_cache_mb < 0:
            raise InputError(f"audio_cache_mb must be a number of MiB >= 0, got {cfg.audio_cache_mb!r}")
        store = ClipAudioStore(train_split, sample_rate, max_cache_bytes=int(cfg.audio_cache_mb * 2**20))
        problems = list(train_split.problems) + list(store.check_headers(progress=self.progress))
        if problems:
            self.log(f"skipped {len(problems)} bad training item(s); first: {problems[0].source}: {problems[0].reason}")
        if not store.split.clips:
            raise InputError(f"{self.data_dir}: no usable training clips in split 'development'")
        try:
            val_split = read_split(self.data_dir, "validation")
        except InputError as e:
            self.log(f"no validation split ({e}); selecting the last checkpoint")
            val_split = None
        if cfg.aux_captions and val_split is not None:
            self.aux_val = build_captioner(cfg.aux_captions, self.data_dir, "validation", cfg.aux_error_rate,
                                           cfg.seed).caption(val_split.clips)
        return store, val_split

    def run(self, resume: bool = True, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train; with `resume` continue from checkpoints/last when present. `stop_after_steps` ends the
        run early (after a checkpoint), as an interruption would."""
        ctx = self.ctx = ddp.current()
        last_dir = self.out_dir / "checkpoints" / "last"
        if ctx.is_main:
            recover_dir(last_dir)
            self._remove_stale_temps()
        ctx.barrier()
        state = self._saved_state(last_dir) if resume else None
        cfg = self.config  # the run's saved configuration when resuming
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        device = ddp.local_device(resolve_device(cfg.device), ctx)
        ddp.check_precision(cfg.precision, device)
        model = create_model(cfg.model).to(device)
        model.config.clip_seconds = cfg.clip_seconds  # saved with the checkpoints: the model's operating length
        if ctx.rank:  # same initial weights on every rank, distinct dropout masks
            torch.manual_seed(cfg.seed + ctx.rank)
        if cfg.grad_checkpointing:
            ddp.enable_grad_checkpointing(model)
        samples = clip_samples(model, cfg.clip_seconds)
        store, val_split = self._load_data(model.sample_rate, samples)
        pairs = TrainPairs(store, samples, seed=cfg.seed, replace_bad=True)
        steps_per_epoch = len(pairs) // cfg.batch_size  # epoch_batches drops the last incomplete batch
        if steps_per_epoch == 0:
            raise InputError(f"batch_size {cfg.batch_size} is larger than the {len(pairs)} training pairs")
        if cfg.batch_size % (ctx.world_size * cfg.grad_accum_steps):
            raise InputError(f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum_steps "
                             f"({ctx.world_size} x {cfg.grad_accum_steps})")
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.text_lr, cfg.weight_decay))
        scheduler = warmup_cosine(optimizer, total_steps, int(cfg.warmup_fraction * total_steps), cfg.min_lr_ratio)
        prog = self._start(state, last_dir, model, optimizer, scheduler, device)
        ctx.barrier()
        sampler = StepBatchSampler(pairs.pair_clip_index, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size,
                                   cfg.grad_accum_steps)
        loop = _Loop(model, ddp.wrap_ddp(model, cfg.model.temperature, ctx) if ctx.enabled else None,
                     ddp.grad_scaler(cfg.precision, device), optimizer, scheduler, sampler,
                     self._loader(pairs, sampler, device), store,
                     CaptionAugmenter(cfg.caption_augment, cfg.seed) if cfg.caption_augment > 0 else None, device)
        model.train()
        started = time.time()
        self._virtual_start = started - prog.train_seconds  # as if every earlier session ran just before this one
        stop = False
        bar = tqdm(total=total_steps, initial=prog.global_step, desc="train",
                   disable=not (self.progress and ctx.is_main))
        while prog.global_step < total_steps and prog.epoch < math.ceil(total_steps / steps_per_epoch) and not stop:
            loop.sampler.set_epoch(prog.epoch, start_step=prog.step_in_epoch)
            for micro in step_groups(loop.loader, cfg.grad_accum_steps):
                loss_values = self._step(loop, micro, prog.epoch)
                prog.global_step += 1
                prog.step_in_epoch += 1
                prog.history.append({"step": prog.global_step, "epoch": prog.epoch,
                                     **{k: round(v, 6) for k, v in loss_values.items()}})
                bar.update(1)
                bar.set_postfix(loss=f"{loss_values['loss']:.3f}")
                done = prog.global_step >= total_steps
                if prog.global_step % cfg.save_every_steps == 0 and not done and prog.step_in_epoch < steps_per_epoch:
                    self._save_last(loop, prog)
                if stop_after_steps is not None and prog.global_step >= stop_after_steps and not done:
                    self._save_last(loop, prog)
                    stop = True
                    break
                if done:
                    break
            if stop:
                break
            self._end_epoch(model, val_split, prog, cfg)
            self._save_last(loop, prog)
        bar.close()
        prog.train_seconds = time.time() - self._virtual_start
        summary = {"global_step": prog.global_step, "epochs_done": prog.epoch, "best_epoch": prog.best_epoch,
                   "best_score": prog.best_score, "stopped_early": stop, "seconds": round(prog.train_seconds, 3),
                   "seconds_this_run": round(time.time() - started, 3), "out_dir": str(self.out_dir),
                   "decode_failures": len(self.decode_problems)}
        if ctx.is_main:
            self._write_metrics(prog)
        ctx.barrier()
        return summary

    def _start(self, state: dict[str, Any] | None, last_dir: Path, model: RetrievalModel,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               device: torch.device) -> Progress:
        """Restore model, optimiser, schedule, RNG and progress from `state`; or, for a fresh run, apply
        `init_from` and write the run's configuration."""
        cfg, ctx = self.config, self.ctx
        if state is not None:
            load_weights(model, last_dir / WEIGHTS_FILE)
            model.to(device)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            ddp.restore_rng(state, ctx)
            prog = Progress(**state["progress"])
            if ctx.is_main:
                self.log(f"resumed at epoch {prog.epoch}, step {prog.global_step}")
            return prog
        report = initialise_from(model, cfg.init_from) if cfg.init_from else None
        if ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out_dir / "train_config.json", to_dict(cfg))
            if report is not None:
                self.log(f"initialised from {report['source']} ({report['kind']}): {report['loaded']} tensors "
                         f"loaded, {len(report['fresh'])} fresh")
                write_json_atomic(self.out_dir / "init.json", report)
        return Progress()

    def _loader(self, pairs: TrainPairs, sampler: StepBatchSampler, device: torch.device) -> torch.utils.data.DataLoader:
        cfg = self.config
        workers = cfg.num_workers
        if workers is None:
            workers = default_num_workers(int(os.environ.get("LOCAL_WORLD_SIZE", self.ctx.world_size)))
        self.decode_problems: dict[str, None] = {}  # insertion-ordered set of decode failures reported so far
        return train_loader(pairs, sampler, workers, cfg.seed, cfg.prefetch_factor, pin_memory=device.type == "cuda")

    def _step(self, loop: _Loop, micro: list[dict[str, Any]], epoch: int) -> dict[str, float]:
        """One optimiser step on the micro-batches of this rank's slice of a global batch (collated by the
        loader); returns the losses averaged over micro-batches and ranks."""
        cfg, ctx = self.config, self.ctx
        loop.optimizer.zero_grad(set_to_none=True)
        parts: list[dict[str, float]] = []
        for k, raw in enumerate(micro):
            batch = self._batch(loop.store, loop.augmenter, raw, epoch)
            with ddp.maybe_no_sync(loop.wrapped, k < len(micro) - 1), ddp.autocast(cfg.precision, loop.device):
                if loop.wrapped is not None:
                    out = loop.wrapped(batch)
                    back = out["backward"]
                else:
                    out = training_loss(loop.model, batch, cfg.model.temperature)
                    back = out["loss"]
            back = back / len(micro)  # the step optimises the mean of the micro-batch losses
            (loop.scaler.scale(back) if loop.scaler is not None else back).backward()
            parts.append(ddp.reduce_losses(out, ctx))
        if loop.scaler is not None:
            loop.scaler.unscale_(loop.optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(loop.model.parameters(), cfg.grad_clip)
        if loop.scaler is not None:
            loop.scaler.step(loop.optimizer)
            loop.scaler.update()
        else:
            loop.optimizer.step()
        loop.scheduler.step()
        return {key: float(np.mean([p[key] for p in parts])) for key in parts[0]}

    def _saved_state(self, last_dir: Path) -> dict[str, Any] | None:
        """The training state to resume from (None: start afresh); adopts the run's saved TrainConfig, except
        the input-pipeline settings given now (they change speed and memory, never the batches)."""
        state = load_train_state(last_dir)
        if state is not None:
            saved = from_dict(TrainConfig, state["config"], f"{last_dir}/train_state.pt")
            for name in _PIPELINE_FIELDS:
                setattr(saved, name, getattr(self.config, name))
            if to_dict(saved) != to_dict(self.config):
                self.log("resuming with the configuration saved in the run (it differs from the one given)")
            self.config = saved
        return state

    def _remove_stale_temps(self) -> None:
        """Temporaries of writes killed in an earlier session (a checkpoint's are tens of MB). This trainer
        is the run's only writer, so they go whatever host wrote them."""
        targets = [self.out_dir / "checkpoints" / name for name in ("last", "best")]
        targets += [self.out_dir / name for name in ("train_config.json", "init.json", "metrics.json", "curve.png")]
        removed = [p for target in targets for p in remove_stale_temps(target, foreign_age_s=0)]
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left by an interrupted write: "
                     f"{', '.join(p.name for p in removed)}")

    def _batch(self, store: ClipAudioStore, augmenter: CaptionAugmenter | None, batch: dict[str, Any],
               epoch: int) -> dict[str, Any]:
        """Main-process touches on a collated micro-batch: report decode failures, attach auxiliary captions,
        paraphrase captions (cheap string work, seeded per pair)."""
        cfg = self.config
        for problem in batch.pop("problem", None) or ():
            if problem is not None and problem not in self.decode_problems:
                self.decode_problems[problem] = None
                self.log(f"skipped a training clip that failed to decode (replaced by the next pair): {problem}")
        index = batch["index"].tolist()
        if self.aux_train is not None:  # a pair made from the aux caption must not see it on the audio side
            clips = [store.clips[int(c)].clip_id for c in batch["clip_index"]]
            batch["aux"] = [None if self.aux_train.get(c) == cap else self.aux_train.get(c)
                            for c, cap in zip(clips, batch["caption"])]
        if augmenter is not None:  # seeded per (seed, epoch, pair): reproducible and resumable
            batch["caption"] = [augmenter(c, np.random.default_rng([cfg.seed, epoch, i, 3]))
                                for c, i in zip(batch["caption"], index)]
        return batch

    # ---- epoch end, checkpoints ---------------------------------------------------------
    def _end_epoch(self, model: RetrievalModel, val_split: SplitData | None, prog: Progress, cfg: TrainConfig) -> None:
        """Validation, best checkpoint and metrics on rank 0 only; the other ranks wait at a barrier."""
        if not self.ctx.is_main:
            prog.epoch += 1
            prog.step_in_epoch = 0
            self.ctx.barrier()
            return
        losses = epoch_losses(prog.history, prog.epoch)
        record: dict[str, Any] = {"epoch": prog.epoch, "step": prog.global_step,
                                  "train_loss": float(np.mean(losses)) if losses else None}
        if val_split is not None:
            metrics = evaluate(model, val_split, cfg.clip_seconds, cfg.eval_batch_size, progress=False,
                               aux_captions=self.aux_val)
            model.train()
            score = selection_score(metrics, cfg.select_metric)
            record.update(val=metrics, score=score)
            self.log(f"epoch {prog.epoch}: loss {record['train_loss']:.4f}  val T2A R@1 {metrics['t2a']['R@1']:.1f} "
                     f"A2T R@1 {metrics['a2t']['R@1']:.1f}  ({cfg.select_metric} {score:.2f})")
        else:
            score = float(prog.epoch)
        if score > prog.best_score:
            prog.best_score, prog.best_epoch = score, prog.epoch
            save_model(model, self.out_dir / "checkpoints" / "best", extra={"epoch": prog.epoch, "record": record})
        prog.history.append({"epoch_end": prog.epoch, **record})
        prog.epoch += 1
        prog.step_in_epoch = 0
        self._write_metrics(prog)
        self.ctx.barrier()

    def _save_last(self, loop: _Loop, prog: Progress) -> None:
        """Rank 0 writes checkpoints/last (with every rank's RNG state); the other ranks wait."""
        rng = ddp.all_rng_states(self.ctx)
        prog.train_seconds = time.time() - self._virtual_start
        if self.ctx.is_main:
            state = {"optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
                     "torch_rng": rng[0], "progress": prog.__dict__, "config": to_dict(self.config)}
            if self.ctx.enabled:
                state["torch_rng_ranks"] = rng
            save_model(loop.model, self.out_dir / "checkpoints" / "last", train_state=state)
        self.ctx.barrier()

    def _write_metrics(self, prog: Progress) -> None:
        write_json_atomic(self.out_dir / "metrics.json", {"best_epoch": prog.best_epoch,
                                                          "best_score": prog.best_score, "history": prog.history})
        plot_curves(prog.history, self.out_dir / "curve.png")


def train(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, resume: bool = True,
          progress: bool = True, stop_after_steps: int | None = None) -> dict[str, Any]:
    return Trainer(data_dir, out_dir, config, progress).run(resume, stop_after_steps)
