"""Saving and loading models: a directory with config.json, model.safetensors and tokenizer/.

Loading never unpickles code: weights come from safetensors, training state through
torch.load(weights_only=True).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from hade.config import ModelConfig, from_dict, to_dict
from hade.errors import InputError
from hade.models.factory import create_model
from hade.models.retrieval import RetrievalModel
from hade.utils.atomic import atomic_dir, recover_dir

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
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise InputError(f"{path}: not a hade checkpoint (no {CONFIG_FILE}); give a directory written by `hade train`")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
    return from_dict(ModelConfig, data, str(config_file))


def load(path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> RetrievalModel:
    """Load a checkpoint directory into a model in eval mode. precision: "fp32", "bf16" or "fp16" (CUDA)
    autocast of the encoders (`RetrievalModel.set_inference_precision`); InputError on a bad value."""
    path = Path(path)
    recover_dir(path)
    config = read_model_config(path)
    model = create_model(config, tokenizer_dir=str(path / TOKENIZER_DIR))
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{path}: missing {WEIGHTS_FILE}")
    try:
        missing, unexpected = st_load_model(model, str(weights), strict=False)
    except (RuntimeError, OSError) as e:
        raise InputError(f"{weights}: cannot load weights for the model described by {CONFIG_FILE}: "
                         f"{' '.join(str(e).split())[:400]}") from None
    if missing or unexpected:
        raise InputError(f"{weights}: weights do not match the config: missing {sorted(missing)[:10]}, "
                         f"unexpected {sorted(unexpected)[:10]}")
    model = model.to(device).eval()
    try:
        return model.set_inference_precision(precision)
    except ValueError as e:
        raise InputError(f"precision: {e}") from None


def load_train_state(path: str | Path) -> dict[str, Any] | None:
    file = Path(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    return torch.load(file, map_location="cpu", weights_only=True)
