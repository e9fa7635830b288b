"""The state of a training run and the checks of its configuration, apart from the loop that drives them
(hade.train.trainer, which re-exports these names): `Progress` (where a run stands; saved with every
checkpoint), `Loop` (what every step works with), `TrainSummary` (what a call of `train` did),
`epoch_losses`, `check_train_config`, `resolve_device`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hade.config import TrainConfig
from hade.data.augment import CaptionAugmenter
from hade.data.dataset import ClipAudioStore
from hade.data.loader import StepBatchSampler
from hade.data.types import SplitData
from hade.errors import InputError
from hade.losses import SAME_CLIP_MODES
from hade.models.retrieval import RetrievalModel
from hade.train.objective import ContrastiveObjective
from hade.train.precision import MixedPrecision
from hade.utils.device import resolve_device as resolve


PIPELINE_FIELDS = ("num_workers", "prefetch_factor", "audio_cache_mb")  # a resume may change these freely


@dataclass(frozen=True)
class TrainSummary:
    """What one `train` call did (`hade train` prints `to_dict()` as JSON).

    global_step / epochs_done: where the run stands after the call; best_epoch, best_step, best_score: its
    best validation so far (the checkpoint `checkpoints/best`); stopped_early: the call ended before the
    run's last epoch (`stop_after_steps`); seconds: training time over every session of the run,
    seconds_this_run: this call's; decode_failures: clips skipped because they could not be decoded."""

    global_step: int
    epochs_done: int
    best_epoch: int
    best_step: int
    best_score: float
    stopped_early: bool
    seconds: float
    seconds_this_run: float
    out_dir: str
    decode_failures: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    best_step: int = -1  # global step of the best validation (absent from states of older runs)


@dataclass
class Loop:
    """What every step of a run works with (built once by Trainer._set_up)."""

    model: RetrievalModel
    objective: ContrastiveObjective  # the loss (owns the temperature) around the model
    forward: torch.nn.Module  # the objective, or its DDP wrapper when several processes train
    precision: MixedPrecision
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: StepBatchSampler  # this rank's micro-batches of each epoch; set_epoch before iterating the loader
    loader: torch.utils.data.DataLoader  # yields collated micro-batches (decoded in worker processes)
    store: ClipAudioStore
    augmenter: CaptionAugmenter | None
    val_split: SplitData | None  # the (subset of the) validation split, None: select the last checkpoint
    steps_per_epoch: int
    total_steps: int
    bar: Any = None  # the tqdm progress bar of this session


def epoch_losses(history: list[dict[str, Any]], epoch: int) -> list[float]:
    """The loss of every step of `epoch` recorded in `history`. Why the history and not a list kept by the
    loop: a resumed run restarts the loop mid-epoch, and its epoch loss must cover the steps done before
    the interruption too (the history is saved with every checkpoint)."""
    return [h["loss"] for h in history if h.get("epoch") == epoch and "loss" in h and "epoch_end" not in h]


def resolve_device(name: str) -> torch.device:
    """TrainConfig.device ("auto", "cpu", "cuda", "cuda:N") as a torch.device (hade.utils.device)."""
    return resolve(name, where="device")


def _optional_count(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"{name}: expected an integer >= 1 or null, got {value!r}")


def check_train_config(config: TrainConfig) -> None:
    """InputError naming the first TrainConfig field the trainer cannot use (checked before any data is read)."""
    config.check()
    cache = config.audio_cache_mb
    if isinstance(cache, bool) or not isinstance(cache, (int, float)) or cache < 0:
        raise InputError(f"audio_cache_mb must be a number of MiB >= 0, got {cache!r}")
    _optional_count(config, "validate_every_steps")
    _optional_count(config, "validate_clips")
    if config.same_clip not in SAME_CLIP_MODES:
        raise InputError(f"same_clip: expected one of {list(SAME_CLIP_MODES)}, got {config.same_clip!r}")
