"""Complete LAION-CLAP and WavCaps checkpoints -> a hade ``dp`` RetrievalModel that scores as the original.

A LAION-CLAP (non-fusion; HTSAT-tiny or -base, RoBERTa) or WavCaps HTSAT-BERT checkpoint becomes a model
holding *every* part that scores: HTSAT (with the original's front end: LAION 48 kHz / hop 480, WavCaps the
settings saved in the checkpoint, else 32 kHz), the text tower (RoBERTa / BERT, built from the checkpoint's
tensor shapes), both Linear-ReLU-Linear projections (DP's own projection), and the learned scale as
``head_options.logit_scale`` (LAION's exp(logit_scale_a), WavCaps' 1/temp). Text is pre-processed as the
original does: LAION the RoBERTa pooler output, at most 77 tokens; WavCaps the [CLS] state, at most 30.

The tokenizer comes from a local folder the user names (roberta-base / bert-base-uncased files) and is never
downloaded. Fusion checkpoints are refused. The rules of :mod:`hade.models.convert` hold: explicit key maps,
a report of what matched, no silent partial load (missing, mis-shaped *and* left-over tensors refuse).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.convert import (
    _ENCODER_UNEXPECTED,
    _SKIP_RULES,
    LAION_FRONT_END,
    ConversionReport,
    _rule,
    apply_converted,
    detect_kind,
    extract_state_dict,
    read_checkpoint,
    strip_module_prefix,
)


FULL_KINDS = ("laion-clap", "wavcaps")
# (source prefix, RetrievalModel prefix) of each part, per convention
_FULL_PREFIXES = {
    "laion-clap": (("audio_branch.", "audio_encoder."), ("text_branch.", "text_encoder.bert."),
                   ("audio_projection.", "head.audio_proj."), ("text_projection.", "head.text_proj.")),
    "wavcaps": (("audio_encoder.audio_enc.", "audio_encoder."), ("text_encoder.text_encoder.", "text_encoder.bert."),
                ("audio_proj.", "head.audio_proj."), ("text_proj.", "head.text_proj.")),
}
_FULL_SKIP = (
    ("audio_transform.", "LAION MLP-loss transform: used by LAION's training loss only, not by its embeddings"),
    ("text_transform.", "LAION MLP-loss transform: used by LAION's training loss only, not by its embeddings"),
)
# text-encoder buffers that transformers derives (older versions saved them)
_TEXT_DERIVED = ("embeddings.position_ids", "embeddings.token_type_ids")
_FUSION_MARKERS = ("fusion_model.", "mel_conv2d.", "mel_conv1d.")
# how each original turns a caption into its text vector
TEXT_SETUP = {"laion-clap": {"text_pooling": "pooler", "max_text_tokens": 77},
              "wavcaps": {"text_pooling": "cls", "max_text_tokens": 30}}
TEXT_FAMILY = {"laion-clap": "roberta", "wavcaps": "bert"}
# roberta-base / bert-base-uncased values that no tensor shape tells (a config.json in the tokenizer folder wins)
_TEXT_DEFAULTS = {"roberta": {"layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
                  "bert": {"layer_norm_eps": 1e-12, "pad_token_id": 0}}
# WavCaps' settings.yaml audio_args -> HTSATConfig fields
_WAVCAPS_AUDIO_ARGS = {"sr": "sample_rate", "n_fft": "n_fft", "hop_length": "hop_length", "n_mels": "mel_bins",
                       "f_min": "fmin", "f_max": "fmax"}


def _refuse_fusion(state: dict[str, Any], kind: str) -> None:
    fusion = sorted(k for k in state if any(m in k for m in _FUSION_MARKERS))
    if kind == "laion-clap" and fusion:
        raise InputError(f"this is a LAION-CLAP feature-fusion checkpoint ({len(fusion)} fusion tensors, e.g. "
                         f"{fusion[0]}); hade converts the non-fusion releases only (e.g. 630k-best.pt, "
                         "630k-audioset-best.pt, music_audioset_epoch_15_esc_90.14.pt)")


def _full_target(key: str, kind: str) -> tuple[str, str] | None:
    for source, target in _FULL_PREFIXES[kind]:
        if key.startswith(source):
            return target, key[len(source):]
    return None


def _scalar(key: str, value: Any, kind: str, report: ConversionReport) -> bool:
    """Record a learned scale; True when `key` is one."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        return False
    if kind == "laion-clap" and key in ("logit_scale_a", "logit_scale_t"):
        report.scalars["logit_scale" if key == "logit_scale_a" else "logit_scale_t"] = float(value.float().exp())
        return True
    if kind == "wavcaps" and key == "temp":
        report.scalars["logit_scale"] = 1.0 / float(value.float())
        report.scalars["temp"] = float(value.float())
        return True
    return False


def _map_full_key(key: str, value: Any, kind: str, report: ConversionReport,
                  mapped: dict[str, torch.Tensor]) -> None:
    if _scalar(key, value, kind, report):
        report.skipped[key] = "learned scale: stored as head_options.logit_scale (see scalars)"
        return
    reason = _rule(key, _FULL_SKIP)
    if reason is not None:
        report.skipped[key] = reason
        return
    target = _full_target(key, kind)
    if target is None:
        report.unexpected[key] = "outside the model's parts; no counterpart in hade"
        return
    prefix, name = target
    if prefix == "audio_encoder.":
        reason = _rule(name, _SKIP_RULES)
        if reason:
            report.skipped[key] = reason
            return
        reason = _rule(name, _ENCODER_UNEXPECTED)
    elif prefix == "text_encoder.bert." and name in _TEXT_DERIVED:
        report.skipped[key] = "derived buffer: transformers recomputes it"
        return
    if reason is None and not isinstance(value, torch.Tensor):
        reason = f"not a tensor ({type(value).__name__})"
    if reason:
        report.unexpected[key] = reason
    else:
        mapped[prefix + name] = value


def map_full_state_dict(obj: Any, kind: str | None = None) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a complete LAION-CLAP / WavCaps checkpoint to RetrievalModel names (``audio_encoder.*``,
    ``text_encoder.bert.*``, ``head.audio_proj.*``, ``head.text_proj.*``); learned scales go to
    ``report.scalars`` (``logit_scale`` = the multiplier of the cosine). Refuses fusion checkpoints."""
    state, stripped = strip_module_prefix(extract_state_dict(obj))
    kind = kind or detect_kind(list(state))
    if kind not in FULL_KINDS:
        raise InputError(f"a complete conversion needs a LAION-CLAP or WavCaps checkpoint; this one is {kind!r} "
                         "(an audio encoder only: convert it without --tokenizer)")
    _refuse_fusion(state, kind)
    report = ConversionReport(kind=kind, stripped_module_prefix=stripped)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        _map_full_key(key, value, kind, report, mapped)
    if "logit_scale" not in report.scalars:
        raise InputError(f"{kind} checkpoint without its learned scale "
                         f"({'logit_scale_a' if kind == 'laion-clap' else 'temp'}): not a complete model")
    return mapped, report


def _need(mapped: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in mapped:
        raise InputError(f"checkpoint lacks {key!r} (hade name); not a complete model of this kind")
    return mapped[key]


def _count(mapped: dict[str, torch.Tensor], pattern: str) -> int:
    n = 0
    while pattern.format(n) in mapped:
        n += 1
    return n


def infer_audio_overrides(mapped: dict[str, torch.Tensor], front_end: dict[str, Any]) -> dict[str, Any]:
    """HTSATConfig overrides of the ``htsat-tiny`` preset that the mapped audio tensors' shapes imply
    (embed_dim, depths, num_heads, window_size, mel_bins: HTSAT-base has 128 / [2, 2, 12, 2]), plus `front_end`."""
    from hade.models.encoders.htsat import HTSAT_PRESETS

    proj = _need(mapped, "audio_encoder.patch_embed.proj.weight")  # [C, 1, p, p]
    stages = _count(mapped, "audio_encoder.layers.{}.blocks.0.norm1.weight")
    depths = [_count(mapped, f"audio_encoder.layers.{s}.blocks.{{}}.norm1.weight") for s in range(stages)]
    tables = [_need(mapped, f"audio_encoder.layers.{s}.blocks.0.attn.relative_position_bias_table")
              for s in range(stages)]
    window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2  # the table has (2w - 1)^2 rows
    found = {"embed_dim": int(proj.shape[0]), "patch_size": int(proj.shape[-1]), "depths": depths,
             "num_heads": [int(t.shape[1]) for t in tables], "window_size": window,
             "mel_bins": int(_need(mapped, "audio_encoder.bn0.weight").shape[0]), **front_end}
    mask = mapped.get("audio_encoder.layers.0.blocks.1.attn_mask")  # [windows, w*w, w*w] of stage 1's grid
    if mask is not None:
        found["spec_size"] = window * int(round(mask.shape[0] ** 0.5)) * found["patch_size"]
    preset = HTSAT_PRESETS["htsat-tiny"].to_dict()
    return {k: v for k, v in found.items() if preset.get(k) != v}


def _wavcaps_front_end(obj: Any) -> dict[str, Any]:
    """The front end a WavCaps checkpoint's saved ``config.audio_args`` names (empty when absent)."""
    config = obj.get("config") if isinstance(obj, dict) else None
    args = config.get("audio_args") if isinstance(config, dict) else None
    if not isinstance(args, dict):
        return {}
    out = {field_: args[key] for key, field_ in _WAVCAPS_AUDIO_ARGS.items() if key in args}
    return {k: (float(v) if k in ("fmin", "fmax") else int(v)) for k, v in out.items()}


def infer_text_config(mapped: dict[str, torch.Tensor], family: str, base: dict[str, Any] | None = None,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A transformers config dict of `family` ("roberta"/"bert") whose shapes are the mapped text tensors';
    values no shape tells come from `base` (the tokenizer folder's config.json), else roberta-base /
    bert-base-uncased; `overrides` win over everything (e.g. num_attention_heads of an unusual model)."""
    from hade.models.encoders.text_bert import text_config_from_dict

    p = "text_encoder.bert."
    words = _need(mapped, p + "embeddings.word_embeddings.weight")  # [V, H]
    shapes = {"vocab_size": int(words.shape[0]), "hidden_size": int(words.shape[1]),
              "num_hidden_layers": _count(mapped, p + "encoder.layer.{}.attention.self.query.weight"),
              "intermediate_size": int(_need(mapped, p + "encoder.layer.0.intermediate.dense.weight").shape[0]),
              "max_position_embeddings": int(_need(mapped, p + "embeddings.position_embeddings.weight").shape[0]),
              "type_vocab_size": int(_need(mapped, p + "embeddings.token_type_embeddings.weight").shape[0])}
    base = dict(base or {}) if (base or {}).get("model_type", family) == family else {}
    config = {**_TEXT_DEFAULTS[family], **base, **shapes, "model_type": family, **(overrides or {})}
    config.setdefault("num_attention_heads", max(1, config["hidden_size"] // 64))
    if config["hidden_size"] % config["num_attention_heads"]:
        raise InputError(f"text encoder: hidden size {config['hidden_size']} is not divisible by "
                         f"{config['num_attention_heads']} heads; give num_attention_heads in the text overrides")
    return text_config_from_dict(config).to_dict()


def _tokenizer_base_config(tokenizer_dir: Path) -> dict[str, Any] | None:
    """config.json of the tokenizer folder (roberta-base / bert-base-uncased downloads carry one), if any."""
    import json

    file = tokenizer_dir / "config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: unreadable ({' '.join(str(e).split())[:200]}); expected a transformers "
                         "config.json") from None
    return data if isinstance(data, dict) else None


def full_model_config(mapped: dict[str, torch.Tensor], report: ConversionReport, tokenizer_dir: Path,
                      obj: Any = None, text_overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The ModelConfig of the converted model: htsat-tiny with the shapes' overrides and the original's front
    end, the text family from the checkpoint's shapes, the original's text pre-processing, a `dp` head of the
    projections' width holding the learned scale."""
    kind = report.kind
    front_end = LAION_FRONT_END if kind == "laion-clap" else _wavcaps_front_end(obj)
    text_config = infer_text_config(mapped, TEXT_FAMILY[kind], _tokenizer_base_config(tokenizer_dir), text_overrides)
    embed_dim = int(_need(mapped, "head.audio_proj.2.weight").shape[0])
    return ModelConfig(audio_encoder="htsat-tiny", audio_overrides=infer_audio_overrides(mapped, front_end),
                       text_encoder=str(tokenizer_dir), text_config=text_config, head="dp",
                       head_options={"logit_scale": report.scalars["logit_scale"]}, embed_dim=embed_dim,
                       **TEXT_SETUP[kind])


def _check_tokenizer_family(tokenizer: Any, text_config: dict[str, Any], kind: str, tokenizer_dir: Path) -> None:
    """A BERT vocabulary read by RoBERTa (or back) gives garbage without an error: compare the padding ids."""
    want = text_config.get("pad_token_id")
    if want is not None and tokenizer.pad_token_id != want:
        files = "roberta-base" if kind == "laion-clap" else "bert-base-uncased"
        raise InputError(f"{tokenizer_dir}: this tokenizer pads with id {tokenizer.pad_token_id}, the {kind} text "
                         f"encoder with {want}: the folder belongs to another model (use {files}'s tokenizer files)")


def convert_full(src: str | Path | dict[str, Any], tokenizer_dir: str | Path, kind: str | None = None,
                 allow_partial: bool = False, text_overrides: dict[str, Any] | None = None):
    """A complete LAION-CLAP (non-fusion) or WavCaps checkpoint (a path, or the loaded dict) -> (a ``dp``
    RetrievalModel in eval mode that scores as the original, ConversionReport). `tokenizer_dir` is a local
    folder with the original's tokenizer (roberta-base / bert-base-uncased files); nothing is downloaded.
    Refuses when a model tensor is missing, has another shape, or a checkpoint tensor has no place in the
    model, unless ``allow_partial``."""
    from hade.models.factory import create_model

    obj = read_checkpoint(src) if isinstance(src, (str, Path)) else src
    mapped, report = map_full_state_dict(obj, kind)
    report.source = str(src) if isinstance(src, (str, Path)) else None
    tokenizer_dir = Path(tokenizer_dir).expanduser()
    config = full_model_config(mapped, report, tokenizer_dir, obj, text_overrides)
    model = create_model(config, tokenizer_dir=str(tokenizer_dir))
    _check_tokenizer_family(model.tokenizer, config.text_config, report.kind, tokenizer_dir)
    apply_converted(model, mapped, report, allow_partial, what=f"the converted {report.kind} model")
    return model.eval(), report



__all__ = ["FULL_KINDS", "TEXT_FAMILY", "TEXT_SETUP", "convert_full", "full_model_config", "infer_audio_overrides",
           "infer_text_config", "map_full_state_dict"]
