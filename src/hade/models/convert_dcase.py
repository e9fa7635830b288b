"""The DCASE 2025 task 6 baseline's released retrieval checkpoint -> a hade ``dp`` RetrievalModel.

The layout was read from the baseline's public repository (``dcase2025_task6_baseline`` by Paul Primus /
CP-JKU, commit c78422f of 2025-06-09, files ``d25_t6/retrieval_module.py``, ``d25_t6/passt.py`` and
``d25_t6/train.py``): a Lightning ``.ckpt`` whose ``state_dict`` holds the attributes of its
``AudioRetrievalModel``:

* ``audio_embedding_model.model.model.*``: hear21passt's ``PaSST`` (``passt_s_p16_s16_128_ap468``: 16 x 16
  patches at stride 16, 1000 frames, so 8 x 62 patches) inside two wrappers (10 s segments, the mel front
  end); its tensor names are hear21passt's, mapped as :mod:`hade.models.convert_audio`'s ``passt`` map does;
  its AudioSet classifiers ``head.*``/``head_dist.*`` are skipped;
* ``audio_embedding_model.model.mel.*``: hear21passt's ``AugmentMelSTFT`` (its window and pre-emphasis
  buffers are not persistent; hade computes its own front end from the preset);
* ``text_embedding_model.*``: a transformers ``RobertaModel`` (roberta-large, no pooling layer), mapped by
  name into hade's text encoder (``text_encoder.bert.*``);
* ``audio_projection`` (Linear 768 -> 1024) and ``text_projection`` (Linear 1024 -> 1024): a ``dp`` head with
  ``projection="linear"`` (``head.audio_proj.0.*``, ``head.text_proj.0.*``);
* ``tau`` ([1]): the temperature; the baseline's logits are cosine / |tau|, kept as
  ``head_options.logit_scale`` = 1 / |tau| (and ``report.scalars["tau"]``).

A model compiled by ``torch.compile`` (the baseline's ``--compile``) saves its tensors with an ``_orig_mod.``
part in the name; it is removed. Text is pre-processed as the baseline does: lower case, punctuation
removed (``caption_normalize="dcase"``), at most 32 tokens, the first token's state (``text_pooling="cls"``).
The tokenizer (roberta-large's files) comes from a local folder and is never downloaded. The rules of
:mod:`hade.models.convert` hold: an explicit key map, a report of what matched, no silent partial load.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.convert import ConversionReport, apply_converted, extract_state_dict, read_checkpoint

KIND = "dcase2025"
BASELINE_PRESET = "passt-s-p16-s16"
# the baseline encodes up to 30 s of a clip (audio_loading.py pads or crops to 30 s) as three 10 s segments
# and averages the clip vectors of those holding audio (retrieval_module.py: forward_audio)
BASELINE_CLIP_SECONDS = 30.0
AUDIO_PREFIX = "audio_embedding_model.model.model."
SIGNATURE = AUDIO_PREFIX + "time_new_pos_embed"
# how the baseline turns a caption into its text vector (retrieval_module.py: forward_text)
TEXT_SETUP = {"text_pooling": "cls", "max_text_tokens": 32, "caption_normalize": "dcase"}

# source pattern (after `module.` and `_orig_mod.` removal) -> RetrievalModel name template
_RULES = [(re.compile(pattern), target) for pattern, target in (
    (r"audio_embedding_model\.model\.model\.patch_embed\.proj\.(weight|bias)", r"audio_encoder.patch_embed.proj.\1"),
    (r"audio_embedding_model\.model\.model\.(cls_token|dist_token|new_pos_embed|freq_new_pos_embed"
     r"|time_new_pos_embed)", r"audio_encoder.\1"),
    (r"audio_embedding_model\.model\.model\.blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)"
     r"\.(weight|bias)", r"audio_encoder.blocks.\1.\2.\3"),
    (r"audio_embedding_model\.model\.model\.norm\.(weight|bias)", r"audio_encoder.norm.\1"),
    (r"text_embedding_model\.(embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight)",
     r"text_encoder.bert.\1"),
    (r"text_embedding_model\.(embeddings\.LayerNorm\.(weight|bias))", r"text_encoder.bert.\1"),
    (r"text_embedding_model\.(encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
     r"|attention\.output\.LayerNorm|intermediate\.dense|output\.dense|output\.LayerNorm)\.(weight|bias))",
     r"text_encoder.bert.\1"),
    (r"audio_projection\.(weight|bias)", r"head.audio_proj.0.\1"),
    (r"text_projection\.(weight|bias)", r"head.text_proj.0.\1"),
)]
# (source prefix, reason) of tensors dropped on purpose
_SKIPS = (
    (AUDIO_PREFIX + "head.", "PaSST's AudioSet classifier (LayerNorm + Linear): not part of hade's encoder"),
    (AUDIO_PREFIX + "head_dist.", "PaSST's distillation classifier: not part of hade's encoder"),
    ("audio_embedding_model.model.mel.", "hear21passt's mel front end: hade computes its own from the preset"),
    ("text_embedding_model.embeddings.position_ids", "derived buffer: transformers recomputes it"),
    ("text_embedding_model.embeddings.token_type_ids", "derived buffer: transformers recomputes it"),
)


def _uncompiled(key: str) -> str:
    """`key` without torch.compile's `_orig_mod.` parts (``text_embedding_model._orig_mod.embeddings...``)."""
    return key.replace("._orig_mod.", ".").removeprefix("_orig_mod.")


def baseline_state(obj: Any) -> tuple[dict[str, Any], bool]:
    """The checkpoint's tensors under the baseline's own attribute names (``module.`` and ``_orig_mod.``
    removed) and whether a ``module.`` prefix was stripped."""
    state, stripped = {}, False
    for key, value in extract_state_dict(obj).items():
        while key.startswith("module."):
            key, stripped = key[len("module."):], True
        state[_uncompiled(key)] = value
    return state, stripped


def is_dcase_checkpoint(obj: Any) -> bool:
    """True when `obj` (a loaded checkpoint) holds the baseline's PaSST under its attribute names."""
    try:
        state, _ = baseline_state(obj)
    except InputError:
        return False
    return SIGNATURE in state


def map_dcase_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename the baseline's tensors to RetrievalModel names (``audio_encoder.*``, ``text_encoder.bert.*``,
    ``head.audio_proj.0.*``, ``head.text_proj.0.*``); ``tau`` goes to ``report.scalars`` (``tau`` and
    ``logit_scale`` = 1/|tau|). InputError for a checkpoint that is not the baseline's."""
    state, stripped = baseline_state(obj)
    if SIGNATURE not in state:
        raise InputError(f"not a DCASE 2025 baseline checkpoint: no {SIGNATURE} (its PaSST); first keys: "
                         f"{sorted(state)[:6]}")
    report = ConversionReport(kind=KIND, stripped_module_prefix=stripped)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        reason = next((r for prefix, r in _SKIPS if key.startswith(prefix)), None)
        target = next((m.expand(t) for p, t in _RULES if (m := p.fullmatch(key))), None)
        if key == "tau" and isinstance(value, torch.Tensor) and value.numel() == 1:
            tau = abs(float(value.float().reshape(())))
            if not tau > 0:
                raise InputError(f"DCASE 2025 baseline checkpoint: tau is {tau}; the logits would be cosine / 0")
            report.scalars.update(tau=tau, logit_scale=1.0 / tau)
            report.skipped[key] = "learned temperature: stored as head_options.logit_scale = 1/|tau| (see scalars)"
        elif reason is not None:
            report.skipped[key] = reason
        else:
            report.place(mapped, key, value, target)
    return mapped, report


def map_dcase_audio(obj: Any) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """The baseline's PaSST alone, under hade encoder names (`hade convert` without --tokenizer, `--init-from`
    of a run whose text encoder is not RoBERTa-large-shaped); the other parts are reported as skipped."""
    mapped, report = map_dcase_state_dict(obj)
    audio = {k[len("audio_encoder."):]: v for k, v in mapped.items() if k.startswith("audio_encoder.")}
    state, _ = baseline_state(obj)
    for key in state:
        if key not in report.skipped and key not in report.unexpected and not key.startswith(AUDIO_PREFIX):
            report.skipped[key] = ("the baseline's RoBERTa / projections: converted with --tokenizer DIR (the complete "
                                   "model), or loaded by --init-from into a RoBERTa-large-shaped run")
    return audio, report


def dcase_model_config(mapped: dict[str, torch.Tensor], report: ConversionReport, tokenizer_dir: Path,
                       audio_encoder: str = BASELINE_PRESET, audio_overrides: dict[str, Any] | None = None,
                       text_overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The converted model's config: the PaSST preset `audio_encoder` (its shapes must be the checkpoint's),
    a RoBERTa of the checkpoint's shapes, the baseline's text pre-processing, a `dp` head with one Linear
    per side, of the projections' width, holding 1/|tau|, and the baseline's 30 s clips (encoded in
    segments of the encoder's input, hade.models.segments)."""
    from hade.models.convert_full import _tokenizer_base_config, infer_text_config

    if "logit_scale" not in report.scalars:
        raise InputError("DCASE 2025 baseline checkpoint without its temperature `tau`: not a complete model")
    text_config = infer_text_config(mapped, "roberta", _tokenizer_base_config(tokenizer_dir), text_overrides)
    if "head.audio_proj.0.weight" not in mapped:
        raise InputError("DCASE 2025 baseline checkpoint without `audio_projection.weight`: not a complete model")
    embed_dim = int(mapped["head.audio_proj.0.weight"].shape[0])
    return ModelConfig(audio_encoder=audio_encoder, audio_overrides=dict(audio_overrides or {}),
                       text_encoder=str(tokenizer_dir), text_config=text_config, head="dp",
                       head_options={"projection": "linear", "logit_scale": report.scalars["logit_scale"]},
                       embed_dim=embed_dim, clip_seconds=BASELINE_CLIP_SECONDS, **TEXT_SETUP)


def convert_dcase(src: str | Path | dict[str, Any], tokenizer_dir: str | Path, audio_encoder: str = BASELINE_PRESET,
                  audio_overrides: dict[str, Any] | None = None, allow_partial: bool = False,
                  text_overrides: dict[str, Any] | None = None):
    """The baseline's checkpoint (a path, or the loaded dict) -> (a ``dp`` RetrievalModel in eval mode,
    ConversionReport). `tokenizer_dir` holds roberta-large's tokenizer files (nothing is downloaded);
    `audio_encoder` is the PaSST preset of the checkpoint's geometry (``passt-s-p16-s16`` for the release).
    Refuses when a model tensor is missing, has another shape, or a checkpoint tensor has no place in the
    model, unless ``allow_partial``."""
    from hade.models.encoders.audio import architecture_name, audio_encoder_config
    from hade.models.factory import create_model

    obj = read_checkpoint(src) if isinstance(src, (str, Path)) else src
    mapped, report = map_dcase_state_dict(obj)
    report.source = str(src) if isinstance(src, (str, Path)) else None
    architecture = architecture_name(audio_encoder_config(audio_encoder, audio_overrides or {}))
    if architecture != "passt":
        raise InputError(f"the checkpoint holds a passt audio encoder (the DCASE 2025 baseline's PaSST) but the "
                         f"preset {audio_encoder!r} builds a {architecture} one; use --audio-encoder {BASELINE_PRESET}")
    tokenizer_dir = Path(tokenizer_dir).expanduser()
    config = dcase_model_config(mapped, report, tokenizer_dir, audio_encoder, audio_overrides, text_overrides)
    model = create_model(config, tokenizer_dir=str(tokenizer_dir))
    if model.tokenizer.pad_token_id != config.text_config.get("pad_token_id"):  # a BERT vocabulary: garbage
        raise InputError(f"{tokenizer_dir}: this tokenizer pads with id {model.tokenizer.pad_token_id}, the baseline's "
                         f"RoBERTa with {config.text_config.get('pad_token_id')}: use roberta-large's tokenizer files")
    apply_converted(model, mapped, report, allow_partial, what=f"the converted {KIND} model")
    return model.eval(), report


__all__ = ["BASELINE_PRESET", "KIND", "TEXT_SETUP", "convert_dcase", "dcase_model_config", "is_dcase_checkpoint",
           "map_dcase_audio", "map_dcase_state_dict"]
