"""Training loop: AdamW, warm-up + cosine, validation (every epoch, or every `validate_every_steps` steps,
on all of the validation split or a fixed subset of `validate_clips` clips) with best-checkpoint selection,
atomic checkpoints and true resume (model, optimiser, scheduler, gradient scaler, RNG and data position).

Input is streamed (hade.data.loader): audio headers are checked up front, and DataLoader workers
(`num_workers`) decode, resample and crop each batch as it is needed, with a bounded per-process cache
(`audio_cache_mb`), so memory does not grow with the data set. Batches depend on (seed, epoch, pair)
only: the same whatever the number of workers, and the same after a resume.

The parts: `Trainer._set_up` (model, data, optimiser; `_start` resumes or initialises), `_train_epoch`
(steps, step validations, periodic checkpoints), `_step` (one optimiser step: micro-batches, mixed
precision from hade.train.precision, the loss from hade.train.objective, identical with or without
DDP), `_end_epoch`/`_validate`/`_save_last` (records, best and last checkpoints). The run's state
(`Progress`, `Loop`) and the config checks are in hade.train.run_state.

Layout of a run directory:
    train_config.json            the TrainConfig of the run
    init.json                    what `init_from` loaded (fresh runs that start from existing weights)
    checkpoints/last/            model + train_state.pt (optimiser, scheduler, scaler, RNG, position)
    checkpoints/best/            the model with the best validation score
    metrics.json, curve.png      history of losses and validation metrics
"""
from __future__ import annotations

import math
import os
import time
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
from hade.eval.evaluate import evaluate
from hade.models.factory import create_model
from hade.models.retrieval import RetrievalModel
from hade.models.segments import segment_count
from hade.train import distributed as ddp
from hade.train.curves import plot_curves
from hade.train.init import adopt_encoders, initialise_from
from hade.train.objective import ContrastiveObjective
from hade.train.precision import MixedPrecision
# run_state's names stay importable from here (hade.train.trainer.check_train_config, ...)
from hade.train.run_state import (PIPELINE_FIELDS, Loop, Progress, TrainSummary, check_train_config,
                                  epoch_losses, resolve_device)
from hade.train.schedule import param_groups, warmup_cosine
from hade.train.validation import selection_score, validation_subset
from hade.utils.atomic import recover_dir, remove_stale_temps, write_json_atomic


class Trainer:
    def __init__(self, data_dir: str | Path, out_dir: str | Path, config: TrainConfig,
                 progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.config = config
        self.progress = progress
        self.log = log

    def run(self, resume: bool = True, stop_after_steps: int | None = None) -> TrainSummary:
        """Train; with `resume` continue from checkpoints/last when present. `stop_after_steps` ends the
        run early (after a checkpoint), as an interruption would."""
        loop, prog = self._set_up(resume)
        started = time.time()
        self._virtual_start = started - prog.train_seconds  # as if every earlier session ran just before this one
        loop.bar = tqdm(total=loop.total_steps, initial=prog.global_step, desc="train",
                        disable=not (self.progress and self.ctx.is_main))
        stopped = False
        while not stopped and self._epochs_left(loop, prog):
            stopped = self._train_epoch(loop, prog, stop_after_steps)
            if not stopped:
                self._end_epoch(loop, prog)
                self._save_last(loop, prog)
        loop.bar.close()
        prog.train_seconds = time.time() - self._virtual_start
        summary = TrainSummary(global_step=prog.global_step, epochs_done=prog.epoch, best_epoch=prog.best_epoch,
                               best_step=prog.best_step, best_score=prog.best_score, stopped_early=stopped,
                               seconds=round(prog.train_seconds, 3),
                               seconds_this_run=round(time.time() - started, 3), out_dir=str(self.out_dir),
                               decode_failures=len(self.decode_problems))
        if self.ctx.is_main:
            self._write_metrics(prog)
        self.ctx.barrier()
        return summary

    # ---- set-up -------------------------------------------------------------------------
    def _set_up(self, resume: bool) -> tuple[Loop, Progress]:
        """Build model, data, loss, optimiser and schedule; restore checkpoints/last (`resume`) or start afresh."""
        ctx = self.ctx = ddp.current()
        last_dir = self.out_dir / "checkpoints" / "last"
        if ctx.is_main:
            recover_dir(last_dir)
            self._remove_stale_temps()
        ctx.barrier()
        state = self._saved_state(last_dir) if resume else None
        cfg = self.config  # the run's saved configuration when resuming
        check_train_config(cfg)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        device = ddp.local_device(resolve_device(cfg.device), ctx)
        precision = MixedPrecision(cfg.precision, device)
        model = self._build_model(device)
        objective = ContrastiveObjective(model, cfg.temperature, ctx, cfg.same_clip)
        store, val_split = self._load_data(model.sample_rate)
        pairs = TrainPairs(store, model.clip_input_samples(cfg.clip_seconds), seed=cfg.seed, replace_bad=True)
        segments = segment_count(pairs.clip_samples, model.max_samples)
        if segments > 1 and ctx.is_main:
            self.log(f"clips of {cfg.clip_seconds:g} s are encoded as {segments} segments of the audio encoder's "
                     f"{model.max_samples / model.sample_rate:g} s input ({segments}x its compute and memory)")
        steps_per_epoch, total_steps = self._plan(len(pairs))
        optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.text_lr, cfg.weight_decay))
        scheduler = warmup_cosine(optimizer, total_steps, int(cfg.warmup_fraction * total_steps), cfg.min_lr_ratio)
        prog = self._start(state, last_dir, model, optimizer, scheduler, precision, device)
        ctx.barrier()
        sampler = StepBatchSampler(pairs.pair_clip_index, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size,
                                   cfg.grad_accum_steps)
        augmenter = CaptionAugmenter(cfg.caption_augment, cfg.seed) if cfg.caption_augment > 0 else None
        forward = ddp.wrap_ddp(objective, ctx) if ctx.enabled else objective
        loop = Loop(model, objective, forward, precision, optimizer, scheduler, sampler,
                     self._loader(pairs, sampler, device), store, augmenter, val_split, steps_per_epoch, total_steps)
        model.train()
        return loop, prog

    def _build_model(self, device: torch.device) -> RetrievalModel:
        cfg = self.config
        cfg.model = adopt_encoders(cfg.model, cfg.init_from)  # a converted checkpoint names the encoders
        model = create_model(cfg.model).to(device)
        model.config.clip_seconds = cfg.clip_seconds  # saved with the checkpoints: the model's operating length
        if self.ctx.rank:  # same initial weights on every rank, distinct dropout masks
            torch.manual_seed(cfg.seed + self.ctx.rank)
        if cfg.grad_checkpointing:
            ddp.enable_grad_checkpointing(model)
        return model

    def _plan(self, num_pairs: int) -> tuple[int, int]:
        """(optimiser steps per epoch, steps of the whole run) for `num_pairs` training pairs."""
        cfg, ctx = self.config, self.ctx
        steps_per_epoch = num_pairs // cfg.batch_size  # epoch_batches drops the last incomplete batch
        if steps_per_epoch == 0:
            raise InputError(f"batch_size {cfg.batch_size} is larger than the {num_pairs} training pairs")
        if cfg.batch_size % (ctx.world_size * cfg.grad_accum_steps):
            raise InputError(f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum_steps "
                             f"({ctx.world_size} x {cfg.grad_accum_steps})")
        return steps_per_epoch, cfg.max_steps or cfg.epochs * steps_per_epoch

    def _load_data(self, sample_rate: int) -> tuple[ClipAudioStore, SplitData | None]:
        """The streamed training store (headers checked) and the validation (subset) split, with the
        auxiliary captions of both when `aux_captions` is set."""
        cfg = self.config
        train_split = read_split(self.data_dir, "development")
        self.aux_train: dict[str, str] | None = None
        self.aux_val: dict[str, str] | None = None
        if cfg.aux_captions:
            captioner = build_captioner(cfg.aux_captions, self.data_dir, "development", cfg.aux_error_rate, cfg.seed)
            self.aux_train = captioner.caption(train_split.clips)
            if cfg.aux_pairs:
                train_split = with_aux_pairs(train_split, self.aux_train)
        # Streaming: headers are checked up front (cheap), samples decoded by the loader's workers when a batch
        # needs them, with a bounded cache; clips that fail to decode then are replaced (TrainPairs.replace_bad).
        store = ClipAudioStore(train_split, sample_rate, max_cache_bytes=int(cfg.audio_cache_mb * 2**20))
        problems = list(train_split.problems) + list(store.check_headers(progress=self.progress))
        if problems:
            self.log(f"skipped {len(problems)} bad training item(s); first: {problems[0].source}: {problems[0].reason}")
        if not store.split.clips:
            raise InputError(f"{self.data_dir}: no usable training clips in split 'development'")
        return store, self._validation_split()

    def _validation_split(self) -> SplitData | None:
        cfg = self.config
        try:
            split = read_split(self.data_dir, "validation")
        except InputError as e:
            self.log(f"no validation split ({e}); selecting the last checkpoint")
            return None
        subset = validation_subset(split, cfg.validate_clips)
        if len(subset.clips) < len(split.clips):
            self.log(f"validating on {len(subset.clips)} of the {len(split.clips)} validation clips")
        if cfg.aux_captions:
            self.aux_val = build_captioner(cfg.aux_captions, self.data_dir, "validation", cfg.aux_error_rate,
                                           cfg.seed).caption(subset.clips)
        return subset

    def _start(self, state: dict[str, Any] | None, last_dir: Path, model: RetrievalModel,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               precision: MixedPrecision, device: torch.device) -> Progress:
        """Restore model, optimiser, schedule, gradient scaler, RNG and progress from `state`; or, for a
        fresh run, apply `init_from` and write the run's configuration."""
        cfg, ctx = self.config, self.ctx
        if state is not None:
            load_weights(model, last_dir / WEIGHTS_FILE)
            model.to(device)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            precision.load_state_dict(state.get("scaler"))
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
                self.log(f"initialised from {report.source} ({report.kind}): {report.loaded} tensors "
                         f"loaded, {len(report.fresh)} fresh")
                write_json_atomic(self.out_dir / "init.json", report.to_dict())
        return Progress()

    def _loader(self, pairs: TrainPairs, sampler: StepBatchSampler, device: torch.device) -> torch.utils.data.DataLoader:
        cfg = self.config
        workers = cfg.num_workers
        if workers is None:
            workers = default_num_workers(int(os.environ.get("LOCAL_WORLD_SIZE", self.ctx.world_size)))
        self.decode_problems: dict[str, None] = {}  # insertion-ordered set of decode failures reported so far
        return train_loader(pairs, sampler, workers, cfg.seed, cfg.prefetch_factor, pin_memory=device.type == "cuda")

    def _saved_state(self, last_dir: Path) -> dict[str, Any] | None:
        """The training state to resume from (None: start afresh); adopts the run's saved TrainConfig, except
        the input-pipeline settings given now (they change speed and memory, never the batches)."""
        state = load_train_state(last_dir)
        if state is not None:
            saved = from_dict(TrainConfig, state["config"], f"{last_dir}/train_state.pt")
            for name in PIPELINE_FIELDS:
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

    # ---- epochs and steps ---------------------------------------------------------------
    @staticmethod
    def _epochs_left(loop: Loop, prog: Progress) -> bool:
        return (prog.global_step < loop.total_steps
                and prog.epoch < math.ceil(loop.total_steps / loop.steps_per_epoch))

    def _train_epoch(self, loop: Loop, prog: Progress, stop_after_steps: int | None) -> bool:
        """The remaining steps of epoch `prog.epoch`, with the step validations and periodic checkpoints due;
        True when `stop_after_steps` ended the run inside the epoch (after saving checkpoints/last)."""
        cfg = self.config
        loop.sampler.set_epoch(prog.epoch, start_step=prog.step_in_epoch)
        for micro in step_groups(loop.loader, cfg.grad_accum_steps):
            self._record_step(loop, prog, self._step(loop, micro, prog.epoch))
            done = prog.global_step >= loop.total_steps
            every = cfg.validate_every_steps
            if every is not None and (prog.global_step % every == 0 or done):
                self._validate(loop, prog, {"step": prog.global_step, "epoch": prog.epoch})
            if done:
                return False
            if stop_after_steps is not None and prog.global_step >= stop_after_steps:
                self._save_last(loop, prog)
                return True
            if prog.global_step % cfg.save_every_steps == 0 and prog.step_in_epoch < loop.steps_per_epoch:
                self._save_last(loop, prog)  # the epoch's last step is saved by the epoch end
        return False

    def _step(self, loop: Loop, micro: list[dict[str, Any]], epoch: int) -> dict[str, float]:
        """One optimiser step on the micro-batches of this rank's slice of a global batch (collated by the
        loader); returns the losses averaged over micro-batches and summed over ranks (the global loss)."""
        loop.optimizer.zero_grad(set_to_none=True)
        parts: list[dict[str, float]] = []
        for k, raw in enumerate(micro):
            batch = self._batch(loop.store, loop.augmenter, raw, epoch)
            with ddp.maybe_no_sync(loop.forward, k < len(micro) - 1), loop.precision.autocast():
                out = loop.forward(batch)
            # W·L_r (hade.train.objective); the step optimises the mean of the micro-batch losses
            loop.precision.backward(out["loss"] * loop.objective.backward_scale / len(micro))
            parts.append(ddp.reduce_losses(out, self.ctx))
        loop.precision.step(loop.optimizer, loop.model.parameters(), self.config.grad_clip)
        loop.scheduler.step()
        return {key: float(np.mean([p[key] for p in parts])) for key in parts[0]}

    @staticmethod
    def _record_step(loop: Loop, prog: Progress, losses: dict[str, float]) -> None:
        prog.global_step += 1
        prog.step_in_epoch += 1
        prog.history.append({"step": prog.global_step, "epoch": prog.epoch,
                             **{k: round(v, 6) for k, v in losses.items()}})
        loop.bar.update(1)
        loop.bar.set_postfix(loss=f"{losses['loss']:.3f}")

    def _batch(self, store: ClipAudioStore, augmenter: CaptionAugmenter | None, batch: dict[str, Any],
               epoch: int) -> dict[str, Any]:
        """Main-process touches on a collated micro-batch: report decode failures, attach auxiliary captions,
        paraphrase captions (cheap string work, seeded per pair)."""
        cfg = self.config
        self._report_decode_problems(batch.pop("problem", None) or ())
        index = batch["index"].tolist()
        if self.aux_train is not None:  # a pair made from the aux caption must not see it on the audio side
            clips = [store.clips[int(c)].clip_id for c in batch["clip_index"]]
            batch["aux"] = [None if self.aux_train.get(c) == cap else self.aux_train.get(c)
                            for c, cap in zip(clips, batch["caption"])]
        if augmenter is not None:  # seeded per (seed, epoch, pair): reproducible and resumable
            batch["caption"] = [augmenter(c, np.random.default_rng([cfg.seed, epoch, i, 3]))
                                for c, i in zip(batch["caption"], index)]
        return batch

    def _report_decode_problems(self, problems: list[str | None]) -> None:
        """Log each clip that a worker failed to decode, once per run."""
        for problem in problems:
            if problem is not None and problem not in self.decode_problems:
                self.decode_problems[problem] = None
                self.log(f"skipped a training clip that failed to decode (replaced by the next pair): {problem}")

    # ---- validation, epoch end, checkpoints ---------------------------------------------
    def _validate(self, loop: Loop, prog: Progress, record: dict[str, Any]) -> None:
        """Rank 0 scores the model on the validation (subset) split into `record` and keeps checkpoints/best
        when the score improves; the other ranks wait. A record that is not an epoch end joins the history.
        Without a validation split the latest model is the best."""
        if self.ctx.is_main:
            score = self._score(loop, record) if loop.val_split is not None else float(prog.global_step)
            if "train_loss" not in record and "val" in record:
                prog.history.append(record)
            if score > prog.best_score:
                prog.best_score, prog.best_epoch, prog.best_step = score, prog.epoch, prog.global_step
                save_model(loop.model, self.out_dir / "checkpoints" / "best",
                           extra={"epoch": prog.epoch, "step": prog.global_step, "record": record})
        self.ctx.barrier()

    def _score(self, loop: Loop, record: dict[str, Any]) -> float:
        cfg = self.config
        metrics = evaluate(loop.model, loop.val_split, cfg.clip_seconds, cfg.eval_batch_size, progress=False,
                           aux_captions=self.aux_val)
        loop.model.train()
        score = selection_score(metrics, cfg.select_metric)
        record.update(val=metrics.to_dict(), score=score)
        where = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f}" if "train_loss" in record
                 else f"step {record['step']}")
        self.log(f"{where}  val T2A R@1 {metrics.t2a['R@1']:.1f} A2T R@1 {metrics.a2t['R@1']:.1f}  "
                 f"({cfg.select_metric} {score:.2f})")
        return score

    def _end_epoch(self, loop: Loop, prog: Progress) -> None:
        """The epoch's record (mean training loss; validation when it is per epoch) and metrics.json."""
        losses = epoch_losses(prog.history, prog.epoch)
        record: dict[str, Any] = {"epoch": prog.epoch, "step": prog.global_step,
                                  "train_loss": float(np.mean(losses)) if losses else None}
        if self.config.validate_every_steps is None:
            self._validate(loop, prog, record)
        prog.history.append({"epoch_end": prog.epoch, **record})
        prog.epoch += 1
        prog.step_in_epoch = 0
        if self.ctx.is_main:
            self._write_metrics(prog)
        self.ctx.barrier()

    def _save_last(self, loop: Loop, prog: Progress) -> None:
        """Rank 0 writes checkpoints/last (with every rank's RNG state); the other ranks wait."""
        rng = ddp.all_rng_states(self.ctx)
        prog.train_seconds = time.time() - self._virtual_start
        if self.ctx.is_main:
            state = {"optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
                     "torch_rng": rng[0], "progress": prog.__dict__, "config": to_dict(self.config)}
            if self.ctx.enabled:
                state["torch_rng_ranks"] = rng
            if loop.precision.state_dict() is not None:
                state["scaler"] = loop.precision.state_dict()
            save_model(loop.model, self.out_dir / "checkpoints" / "last", train_state=state)
        self.ctx.barrier()

    def _write_metrics(self, prog: Progress) -> None:
        write_json_atomic(self.out_dir / "metrics.json", {"best_epoch": prog.best_epoch, "best_step": prog.best_step,
                                                          "best_score": prog.best_score, "history": prog.history})
        plot_curves(prog.history, self.out_dir / "curve.png")


def train(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, resume: bool = True,
          progress: bool = True, stop_after_steps: int | None = None) -> TrainSummary:
    return Trainer(data_dir, out_dir, config, progress).run(resume, stop_after_steps)
