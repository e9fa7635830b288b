"""Saving and loading models: a directory with config.json, model.safetensors and tokenizer/.

Loading never unpickles code: weights come from safetensors, training state through
torch.load(weights_only=True). Loading never reaches the network (hade.utils.offline), and every
missing, truncated or corrupt file raises InputError naming that file.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from hade.config import ModelConfig, from_dict, to_dict
from hade.errors import InputError
from hade.models.convert import LAION_FRONT_END, ConversionReport, apply_state_dict, read_checkpoint
from hade.models.convert_audio import map_encoder_state_dict
from hade.models.convert_hf import convert_hf_clap, is_hf_clap_folder
from hade.models.encoders.audio import architecture_name
from hade.models.encoders.text_bert import load_tokenizer
from hade.models.factory import create_model
from hade.models.retrieval import RetrievalModel
from hade.utils.atomic import atomic_dir, recover_dir
from hade.utils.device import resolve_device
from hade.utils.outdir import OutputKind

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
TRAIN_STATE_FILE = "train_state.pt"


def save_model(model: RetrievalModel, path: str | Path, extra: dict[str, Any] | None = None,
               train_state: dict[str, Any] | None = None) -> Path:
    """Write a self-contained checkpoint directory atomically (config, weights, tokenizer, optional
    training state and `extra` JSON such as metrics)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(model.config), indent=2) + "\n")
        st_save_model(model, str(tmp / WEIGHTS_FILE))
        model.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if extra is not None:
            (tmp / "info.json").write_text(json.dumps(extra, indent=2) + "\n")
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    """The ModelConfig of checkpoint directory `path`; InputError naming config.json when it is missing,
    not UTF-8 JSON, or not a ModelConfig."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if path.is_file():
        raise InputError(f"{path}: a file, where a hade checkpoint directory ({CONFIG_FILE}, {WEIGHTS_FILE}, "
                         f"{TOKENIZER_DIR}/) is expected; a foreign checkpoint (HTS-AT, LAION-CLAP, WavCaps .ckpt/.pt/"
                         f".pth/.safetensors) becomes one with `hade convert {path} --out DIR`")
    if not config_file.is_file():
        raise InputError(f"{path}: not a hade checkpoint (no {CONFIG_FILE}); give a directory written by `hade train`")
    if is_hf_clap_folder(path):
        raise InputError(f"{path}: a Hugging Face ClapModel folder, not a hade checkpoint; convert it once with "
                         f"`hade convert {path} --out DIR` and give DIR")
    try:
        data = json.loads(config_file.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{config_file}: unreadable ({_one_line(e)}); expected the UTF-8 JSON written by "
                         "`hade train`") from None
    return from_dict(ModelConfig, data, str(config_file))


def is_checkpoint_dir(path: str | Path) -> bool:
    """Whether `path` is a hade checkpoint directory (a ModelConfig in config.json, and the weights)."""
    path = Path(path)
    try:
        read_model_config(path)
    except InputError:
        return False
    return (path / WEIGHTS_FILE).is_file()


# What `save_model` writes; it replaces the whole directory (hade.utils.outdir).
CHECKPOINT_OUTPUT = OutputKind("hade checkpoint", is_checkpoint_dir, replaces=True,
                               contents=(CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR, "info.json", TRAIN_STATE_FILE))


def _one_line(error: BaseException, limit: int = 300) -> str:
    return " ".join(str(error).split())[:limit]


def check_checkpoint_files(path: Path) -> None:
    """InputError naming the first missing part of checkpoint directory `path` (config.json is checked
    by read_model_config). Checked before anything is built so that an incomplete copy fails at once,
    and so that transformers never sees a missing tokenizer folder (it would take it for a Hub repo id)."""
    tokenizer_dir = path / TOKENIZER_DIR
    if not tokenizer_dir.is_dir():
        raise InputError(f"{tokenizer_dir}: missing; the checkpoint is incomplete (`hade train` writes "
                         f"{CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/ together); copy the whole "
                         "checkpoint directory again")
    if not (path / WEIGHTS_FILE).is_file():
        raise InputError(f"{path / WEIGHTS_FILE}: missing; the checkpoint is incomplete; copy the whole "
                         "checkpoint directory again")


def load_weights(model: torch.nn.Module, weights: Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load safetensors file `weights` into `model`; returns (missing, unexpected) key lists when not
    `strict`. InputError naming the file when it is truncated or corrupt (safetensors raises
    SafetensorError with a bare header message) or does not fit the model (RuntimeError from torch)."""
    try:
        return st_load_model(model, str(weights), strict=strict)
    except SafetensorError as e:
        raise InputError(f"{weights}: truncated or corrupt safetensors file ({_one_line(e)}); copy the "
                         "checkpoint again or retrain") from None
    except (RuntimeError, OSError) as e:
        raise InputError(f"{weights}: cannot load weights for the model described by {CONFIG_FILE}: "
                         f"{_one_line(e, 400)}") from None


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """Every tensor of safetensors file `weights` (on CPU); InputError naming the file when it cannot be read."""
    try:
        return st_load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise InputError(f"{weights}: truncated or corrupt safetensors file ({_one_line(e)})") from None


def _build(path: Path, config: ModelConfig) -> RetrievalModel:
    tokenizer = load_tokenizer(path / TOKENIZER_DIR)  # its errors name the tokenizer file
    try:
        return create_model(config, tokenizer=tokenizer)
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # InputError is a ValueError
        raise InputError(f"{path / CONFIG_FILE}: does not describe a model this version of hade can build: "
                         f"{_one_line(e, 400)}") from None


def load(path: str | Path, device: str | torch.device = "cpu", compute: str = "fp32", *,
         precision: str | None = None) -> RetrievalModel:
    """Load a checkpoint directory into a model in eval mode. compute: "fp32", "bf16" or "fp16" (CUDA)
    autocast of the encoders (`RetrievalModel.set_compute`); `precision` is its deprecated former name.
    Every missing, truncated or corrupt file, and a bad compute dtype, raise InputError naming it.
    A Hugging Face ``ClapModel`` folder (config.json, weights, tokenizer files) is converted on the fly
    (:func:`hade.models.convert_hf.convert_hf_clap`; `hade convert` saves the result)."""
    if precision is not None:
        warnings.warn("hade.load(precision=) is deprecated; use compute=", DeprecationWarning, stacklevel=2)
        compute = precision
    path = Path(path)
    device = resolve_device(device, where="device")
    if is_hf_clap_folder(path):
        model, _ = convert_hf_clap(path)
        return model.to(device).eval().set_compute(compute)
    recover_dir(path)
    config = read_model_config(path)
    check_checkpoint_files(path)
    model = _build(path, config)
    weights = path / WEIGHTS_FILE
    missing, unexpected = load_weights(model, weights, strict=False)
    if missing or unexpected:
        raise InputError(f"{weights}: weights do not match the config: missing {sorted(missing)[:10]}, "
                         f"unexpected {sorted(unexpected)[:10]}")
    return model.to(device).eval().set_compute(compute)


# What a resumable training state holds (written by hade.train.trainer.Trainer._save_last).
TRAIN_STATE_KEYS = ("optimizer", "scheduler", "torch_rng", "progress", "config")


def load_train_state(path: str | Path) -> dict[str, Any] | None:
    """The training state of checkpoint directory `path`, or None when it has none. InputError naming the
    file when it is truncated, corrupt or not a hade training state."""
    file = Path(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise InputError(f"{file}: truncated or corrupt training state ({type(e).__name__}: {_one_line(e)}); "
                         "the run cannot resume from it: start it over with --no-resume") from None
    missing = [k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(f"{file}: not a hade training state (missing {missing}); start the run over with "
                         "--no-resume")
    return state


# ---- foreign checkpoints (here, not in models/convert.py: this module sits above the models) ----
def convert_checkpoint(src: str | Path, out_ckpt_dir: str | Path, model_config: ModelConfig,
                       allow_partial: bool = False, kind: str | None = None,
                       state: dict[str, Any] | None = None) -> ConversionReport:
    """Build a hade model from ``model_config`` (hade.ModelConfig), load the audio encoder from ``src``
    (or from `state`, its contents when the caller has read them already) and save a hade checkpoint
    directory (`hade convert`). A LAION-CLAP source without front-end overrides gets
    :data:`hade.models.convert.LAION_FRONT_END` (48 kHz / hop 480) so the encoder sees the features it was
    trained on."""
    from hade.models.factory import audio_config

    state = read_checkpoint(src) if state is None else state
    mapped, report = map_encoder_state_dict(state, kind, architecture_name(audio_config(model_config)))
    report.source = str(src)
    if report.kind == "laion-clap" and not set(LAION_FRONT_END) & set(model_config.audio_overrides):
        model_config = dataclasses.replace(model_config,
                                           audio_overrides={**model_config.audio_overrides, **LAION_FRONT_END})
    model = create_model(model_config)
    apply_state_dict(model.audio_encoder, mapped, report, allow_partial, what=f"the {report.kind} audio encoder")
    save_model(model, out_ckpt_dir, extra={"converted_from": str(src), "conversion": report.to_dict()})
    return report
