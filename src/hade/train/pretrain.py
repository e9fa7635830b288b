"""Audio-tagging pretraining (`hade pretrain`): the paper's encoders start pretrained (HTSAT on AudioSet
tagging, BERT on text); this gives hade's audio encoders the same kind of start on a SynthCaps set, whose
clips come with the events rendered into them (:mod:`hade.data.tags`).

A run directory holds
* ``audio_encoder.safetensors``: the encoder's weights at the best validation epoch (hade's own names);
* ``pretrain.json``: the config, the label vocabulary, the per-epoch history and the best epoch;
* ``state.pt``: the last finished epoch's weights, optimiser and schedule (read with weights_only=True),
  so an interrupted run resumes at the next epoch and ends as an uninterrupted one would.

`hade train --init-from RUN` then starts any head from the encoder (:mod:`hade.train.init`).
Every crop depends on (seed, epoch, clip) only, and the epoch order on (seed, epoch): resumable and
reproducible. Validation crops each clip from its start, as evaluation does. A `clip_seconds` longer than
the encoder's input is encoded in segments (`AudioTagger`), as `hade train` does.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_model as st_save_model
from tqdm.auto import tqdm

from hade.config import ModelConfig, PretrainConfig, from_dict, seconds_to_samples, to_dict
from hade.data.audio import fit_length
from hade.data.dataset import ClipAudioStore
from hade.data.readers import read_split
from hade.data.tags import ClipTags, read_clip_tags
from hade.errors import InputError
from hade.models.encoders.audio import build_audio_encoder
from hade.models.factory import audio_config
from hade.models.segments import segment_count
from hade.models.tagger import AudioTagger
from hade.train.schedule import warmup_cosine
from hade.utils.atomic import atomic_path, write_json_atomic

ENCODER_FILE = "audio_encoder.safetensors"
INFO_FILE = "pretrain.json"
STATE_FILE = "state.pt"
_ORDER_TAG, _CROP_TAG = 11, 12


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over labels (with at least one positive) of each label's average precision: [N, L] scores and
    0/1 targets. Ties are broken by clip order (a stable sort), so the figure is deterministic.
    Hand-written: scikit-learn is not a dependency, and this is a dozen lines."""
    aps = []
    for label in range(targets.shape[1]):
        positive = targets[:, label] > 0.5
        if not positive.any():
            continue
        order = np.argsort(-scores[:, label], kind="stable")
        hits = positive[order]
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        aps.append(float(precision_at_hit.mean()))
    return float(np.mean(aps)) if aps else float("nan")


class _Data:
    """A split's decoded audio with its multi-hot labels, cropped to `samples` per clip."""

    def __init__(self, root: Path, split_name: str, sample_rate: int, samples: int, progress: bool,
                 labels: tuple[str, ...] | None = None) -> None:
        self.store = ClipAudioStore(read_split(root, split_name), sample_rate)
        self.problems = list(self.store.split.problems) + self.store.check_headers(progress=progress)
        if not self.store.clips:
            raise InputError(f"{root}: split {split_name!r} has no readable clips to pretrain on")
        self.tags: ClipTags = read_clip_tags(root, self.store.split, split_name, labels)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.store)

    def batch(self, indices: np.ndarray, rngs: list[np.random.Generator] | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, samples] waveforms (random crops with `rngs`, else from the start), [B] samples of audio in
        each (the rest is zero padding) and [B, L] targets."""
        raw = [self.store.get(int(i)) for i in indices]
        waves = [fit_length(w, self.samples, mode="random" if rngs else "start", rng=rngs[k] if rngs else None)
                 for k, w in enumerate(raw)]
        lengths = torch.tensor([min(len(w), self.samples) for w in raw])
        return torch.from_numpy(np.stack(waves)), lengths, torch.from_numpy(self.tags.targets[indices])


def _optimizer(model: AudioTagger, cfg: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


@torch.no_grad()
def _validate(model: AudioTagger, data: _Data, batch_size: int) -> float:
    model.eval()
    scores = []
    for start in range(0, len(data), batch_size):
        waves, lengths, _ = data.batch(np.arange(start, min(start + batch_size, len(data))), None)
        scores.append(torch.sigmoid(model(waves, lengths)).numpy())
    return average_precision(np.concatenate(scores), data.tags.targets)


def _epoch(model: AudioTagger, data: _Data, cfg: PretrainConfig, epoch: int, optimizer: torch.optim.Optimizer,
           schedule: Any, bar: Any) -> float:
    """One pass over the training clips in a (seed, epoch) order; returns the mean loss."""
    model.train()
    order = np.random.default_rng([cfg.seed, epoch, _ORDER_TAG]).permutation(len(data))
    losses = []
    for start in range(0, len(order), cfg.batch_size):
        indices = order[start:start + cfg.batch_size]
        rngs = [np.random.default_rng([cfg.seed, epoch, int(i), _CROP_TAG]) for i in indices]
        waves, lengths, targets = data.batch(indices, rngs)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(waves, lengths), targets)
        if not torch.isfinite(loss):
            raise InputError(f"pretraining diverged at epoch {epoch + 1} (loss {loss.item()}); lower lr ({cfg.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return float(np.mean(losses))


@dataclass(frozen=True)
class TagEpoch:
    """One finished pretraining epoch: its mean training loss and its validation mAP (0-1)."""

    epoch: int
    loss: float
    val_mAP: float


@dataclass(frozen=True)
class PretrainSummary:
    """What a pretraining run did: its pretrain.json (`to_dict`, read back by `read`). labels: the tag
    vocabulary; segments: encoder calls per clip; history: every finished epoch; best: the epoch whose
    encoder was kept (None before one finished); chance_val_mAP: what random scores would get."""

    config: PretrainConfig
    data: str
    labels: tuple[str, ...]
    train_clips: int
    val_clips: int
    segments: int
    epochs_done: int
    history: tuple[TagEpoch, ...]
    best: TagEpoch | None
    chance_val_mAP: float
    task: str = "tagging"

    @property
    def finished(self) -> bool:
        return self.epochs_done == self.config.epochs

    def to_dict(self) -> dict[str, Any]:
        best = None if self.best is None else {"epoch": self.best.epoch, "val_mAP": self.best.val_mAP}
        return {"kind": "hade-pretrain", "task": self.task, "config": to_dict(self.config), "data": self.data,
                "labels": list(self.labels), "train_clips": self.train_clips, "val_clips": self.val_clips,
                "segments": self.segments, "epochs_done": self.epochs_done,
                "history": [vars(h).copy() for h in self.history], "best": best,
                "chance_val_mAP": self.chance_val_mAP}

    @classmethod
    def read(cls, run: str | Path) -> "PretrainSummary":
        """The pretrain.json of the run folder `run`; InputError naming the file when it is not one (a
        record written before `segments` was recorded reads as 1 segment)."""
        path = Path(run) / INFO_FILE
        try:
            raw = json.loads(path.read_bytes().decode("utf-8"))
            history = tuple(TagEpoch(int(h["epoch"]), float(h["loss"]), float(h["val_mAP"])) for h in raw["history"])
            best = next((h for h in history if raw["best"] and h.epoch == raw["best"]["epoch"]), None)
            return cls(config=from_dict(PretrainConfig, raw["config"], f"{path}: config"), data=str(raw["data"]),
                       labels=tuple(raw["labels"]), train_clips=int(raw["train_clips"]),
                       val_clips=int(raw["val_clips"]), segments=int(raw.get("segments", 1)),
                       epochs_done=int(raw["epochs_done"]), history=history, best=best,
                       chance_val_mAP=float(raw["chance_val_mAP"]), task=str(raw.get("task", "tagging")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: not a readable pretraining record ({type(exc).__name__}: {exc})") from None


def _resume(out: Path, model: AudioTagger, optimizer: torch.optim.Optimizer, schedule: Any,
            cfg: PretrainConfig) -> list[TagEpoch]:
    """The finished epochs, after restoring `model`, `optimizer` and `schedule` from out/state.pt; none
    (a fresh start) when there is no state. A state of another config is refused."""
    path = out / STATE_FILE
    if not path.is_file():
        return []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is reported as such
        raise InputError(f"{path}: unreadable pretraining state ({type(exc).__name__}); delete it to start over") from None
    if state.get("config") != to_dict(cfg):
        raise InputError(f"{path}: this run was started with another config; use another --out or delete {out}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return [TagEpoch(int(h["epoch"]), float(h["loss"]), float(h["val_mAP"])) for h in state["history"]]


def _save_state(out: Path, model: AudioTagger, optimizer: torch.optim.Optimizer, schedule: Any,
                cfg: PretrainConfig, history: list[TagEpoch]) -> None:
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save({"config": to_dict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": len(history),
                    "history": [vars(h).copy() for h in history]}, tmp)


def _best(history: list[TagEpoch]) -> TagEpoch | None:
    """The epoch of the highest validation mAP (the first of equals), None before one finished."""
    best = None
    for h in history:
        if best is None or h.val_mAP > best.val_mAP:
            best = h
    return best


def _save_encoder(out: Path, model: AudioTagger) -> None:
    with atomic_path(out / ENCODER_FILE) as tmp:
        st_save_model(model.audio_encoder, str(tmp))


def pretrain(data_dir: str | Path, out: str | Path, cfg: PretrainConfig, progress: bool = True,
             stop_after_epochs: int | None = None, log: Callable[[str], None] = print) -> PretrainSummary:
    """Pretrain `cfg.audio_encoder` by tagging the events of the SynthCaps set at `data_dir` (train split;
    best epoch by validation mAP); writes the run directory `out` (module docstring) and returns what its
    pretrain.json holds. `stop_after_epochs` ends this call early (tests of resuming)."""
    cfg.check()
    root, out = Path(data_dir), Path(out)
    torch.manual_seed(cfg.seed)
    encoder = build_audio_encoder(audio_config(ModelConfig(audio_encoder=cfg.audio_encoder,
                                                           audio_overrides=cfg.audio_overrides)))
    rate = encoder.config.sample_rate
    samples = seconds_to_samples(cfg.clip_seconds, rate)
    segments = segment_count(samples, encoder.max_samples)
    if segments > 1:
        log(f"clip_seconds {cfg.clip_seconds} s is longer than {cfg.audio_encoder}'s input "
            f"({encoder.max_seconds:.2f} s): each clip is encoded in {segments} segments")
    train_data = _Data(root, "train", rate, samples, progress)
    val_data = _Data(root, "val", rate, samples, progress, labels=train_data.tags.labels)
    for problem in train_data.problems + val_data.problems:
        log(f"skipped: {problem.source}: {problem.reason}")
    model = AudioTagger(encoder, len(train_data.tags.labels))
    optimizer = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = warmup_cosine(optimizer, total, int(cfg.warmup_fraction * total), cfg.min_lr_ratio)
    out.mkdir(parents=True, exist_ok=True)
    history = _resume(out, model, optimizer, schedule, cfg)
    bar = tqdm(total=total, initial=len(history) * steps_per_epoch, desc="pretrain", disable=not progress)
    last = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, len(history) + stop_after_epochs)
    for epoch in range(len(history), last):
        loss = _epoch(model, train_data, cfg, epoch, optimizer, schedule, bar)
        history.append(TagEpoch(epoch + 1, loss, _validate(model, val_data, cfg.batch_size)))
        if _best(history) is history[-1]:
            _save_encoder(out, model)
        _save_state(out, model, optimizer, schedule, cfg, history)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}, validation mAP {100 * history[-1].val_mAP:.1f}")
    bar.close()
    summary = PretrainSummary(
        config=cfg, data=str(root), labels=tuple(train_data.tags.labels), train_clips=len(train_data),
        val_clips=len(val_data), segments=segments, epochs_done=len(history), history=tuple(history),
        best=_best(history), chance_val_mAP=float(val_data.tags.targets.mean()))
    write_json_atomic(out / INFO_FILE, summary.to_dict())
    return summary
