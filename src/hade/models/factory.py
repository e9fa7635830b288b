"""One factory: `create_model(ModelConfig)` builds any combination of encoders and head."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.encoders.audio import audio_encoder_config, build_audio_encoder
from hade.models.encoders.text_bert import (
    BUNDLED_MINILM,
    TextEncoder,
    bert_from_config,
    load_text_backbone,
    load_tokenizer,
    resolve_text_dir,
)
from hade.models.heads import build_head
from hade.models.retrieval import RetrievalModel


def audio_config(config: ModelConfig) -> Any:
    """The audio encoder config of a model: its preset (any architecture) with `audio_overrides` applied."""
    return audio_encoder_config(config.audio_encoder, config.audio_overrides)


def create_model(config: ModelConfig, tokenizer_dir: str | None = None, tokenizer: Any = None) -> RetrievalModel:
    """Build a model. With `config.text_config` set (a saved checkpoint's config) the text encoder is built
    with random weights from that config and the tokenizer is `tokenizer`, or comes from `tokenizer_dir`;
    otherwise the text backbone is loaded from `config.text_encoder` and the model's copy of the config gets
    `text_config` filled in (the caller's config is not changed)."""
    config = dataclasses.replace(config)
    audio_encoder = build_audio_encoder(audio_config(config))
    pooler = config.text_pooling == "pooler"
    if config.text_config is not None:
        bert = bert_from_config(config.text_config, pooler=pooler)
        if tokenizer is None:
            tokenizer = load_tokenizer(tokenizer_dir or _tokenizer_dir(config.text_encoder))
        _check_vocab_fits(tokenizer, config.text_config)
    else:
        bert, tokenizer, config.text_config = load_text_backbone(
            config.text_encoder, config.text_pretrained, config.text_overrides, pooler=pooler)
    text_encoder = TextEncoder(bert, pooling=config.text_pooling)
    head = build_head(config.head, audio_encoder.levels, text_encoder.hidden_size,
                      text_encoder.num_layers, config.embed_dim, config.head_options)
    return RetrievalModel(config, audio_encoder, text_encoder, head, tokenizer)


def _tokenizer_dir(text_encoder: str) -> Path:
    """The tokenizer folder of `text_encoder`: the `tokenizer/` folder of a hade checkpoint directory (a run
    that starts from a converted model names it), else the text model's own folder."""
    path = Path(text_encoder).expanduser()
    if text_encoder != BUNDLED_MINILM and (path / "tokenizer").is_dir() and (path / "model.safetensors").is_file():
        return path / "tokenizer"
    return resolve_text_dir(text_encoder)


def _check_vocab_fits(tokenizer: Any, text_config: dict[str, Any]) -> None:
    """Token ids index the text encoder's embedding table: a tokenizer with more tokens than the table has
    rows would fail on the first rare word, far from the cause (a tokenizer from another model)."""
    rows = text_config.get("vocab_size")
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise InputError(f"tokenizer: {len(tokenizer)} tokens, but the text encoder's vocab_size is {rows}; "
                         "the tokenizer belongs to another model")
