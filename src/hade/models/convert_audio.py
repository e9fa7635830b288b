"""Explicit key maps from the public PaSST and BEATs checkpoints to hade's encoders.

* ``beats``: BEATs' iter3 / iter3+ AS2M checkpoints (``{"cfg": ..., "model": {...}}``): ``patch_embedding``,
  ``layer_norm``, ``post_extract_proj``, ``encoder.pos_conv.0.{weight_g,weight_v,bias}``, ``encoder.layer_norm``,
  ``encoder.layers.N.self_attn.{q,k,v,out}_proj``/``grep_linear``/``grep_a`` (block 1 also
  ``relative_attention_bias``), ``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``; the fine-tuned
  classifier ``predictor.*`` is skipped, and so are ESPnet's padding-mask convolutions and its per-block copies
  of the shared relative position table (ESPnet's state dicts load too).
* ``passt``: PaSST's AudioSet checkpoints as ``hear21passt`` loads them (the bare ``PaSST`` state dict:
  ``patch_embed.proj.*``, ``cls_token``, ``dist_token``, ``new_pos_embed``, ``freq_new_pos_embed``,
  ``time_new_pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``),
  also wrapped as hear21passt's ``PasstBasicWrapper`` (``net.*``). The AudioSet classifier (``head.*``,
  ``head_dist.*``) is skipped.
* ``dcase2025``: the DCASE 2025 baseline's released retrieval checkpoint; its PaSST
  (``audio_embedding_model.model.model.*``) by :mod:`hade.models.convert_dcase`'s map (the complete model,
  RoBERTa and projections too, is :func:`hade.models.convert_dcase.convert_dcase`).

Each map lists every tensor name it accepts; anything else is *unexpected*. The same report of matched,
skipped, unexpected, missing and mismatched tensors as for HTSAT (:class:`hade.models.convert.ConversionReport`),
and the same refusal of partial loads unless asked for.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hade.errors import InputError
from hade.models.convert import (KINDS, ConversionReport, apply_state_dict, extract_state_dict, map_state_dict,
                                 read_checkpoint, strip_module_prefix)
from hade.models.convert_dcase import KIND as DCASE_KIND
from hade.models.convert_dcase import is_dcase_checkpoint, map_dcase_audio

_VIT_BLOCK = r"blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"

# kind -> (wrapper prefixes stripped first, [(source pattern, hade name template)], [(skipped prefix, reason)])
KEY_MAPS: dict[str, tuple[tuple[str, ...], list[tuple[str, str]], list[tuple[str, str]]]] = {
    "passt": (
        ("net.",),
        [(r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
         (r"(cls_token|dist_token|new_pos_embed|freq_new_pos_embed|time_new_pos_embed)", r"\1"),
         (_VIT_BLOCK, r"blocks.\1.\2.\3"),
         (r"norm\.(weight|bias)", r"norm.\1")],
        [("head.", "PaSST's AudioSet classifier (LayerNorm + Linear): not part of hade's encoder"),
         ("head_dist.", "PaSST's distillation classifier: not part of hade's encoder"),
         ("mel.", "hear21passt's mel front end: hade computes its own from the config")],
    ),
    "beats": (
        (),
        [(r"patch_embedding\.weight", r"patch_embedding.weight"),
         (r"(layer_norm|post_extract_proj)\.(weight|bias)", r"\1.\2"),
         (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"encoder.pos_conv.\1"),
         (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
         (r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj|grep_linear)\.(weight|bias)",
          r"encoder.layers.\1.self_attn.\2.\3"),
         (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.self_attn.grep_a"),
         (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight",
          r"encoder.layers.0.self_attn.relative_attention_bias.weight"),
         (r"encoder\.layers\.(\d+)\.(self_attn_layer_norm|fc1|fc2|final_layer_norm)\.(weight|bias)",
          r"encoder.layers.\1.\2.\3")],
        [("predictor.", "BEATs' fine-tuned AudioSet classifier: not part of hade's encoder"),
         ("patch_embedding_pad.", "ESPnet's frozen padding-mask convolution: hade has no padding mask"),
         ("raw2fbank_pad.", "ESPnet's frozen padding-mask convolution: hade has no padding mask")]
        + [(f"encoder.layers.{i}.self_attn.relative_attention_bias.", "ESPnet's copy of block 1's shared "
            "relative position table") for i in range(1, 64)],
    ),
}
AUDIO_KINDS = (*KEY_MAPS, DCASE_KIND)
# kind -> the architecture of the encoder its checkpoints hold
_ARCHITECTURE = {"passt": "passt", "beats": "beats", DCASE_KIND: "passt"}


def map_audio_state_dict(state: dict[str, Any], kind: str) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a PaSST/BEATs state dict (or checkpoint dict) to hade encoder names by the map of `kind`."""
    if kind not in KEY_MAPS:
        raise InputError(f"unknown audio checkpoint kind {kind!r}; known: {list(AUDIO_KINDS)}")
    wrappers, rules, skips = KEY_MAPS[kind]
    state, stripped = strip_module_prefix(extract_state_dict(state))
    report = ConversionReport(kind=kind, stripped_module_prefix=stripped)
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = next((key[len(w):] for w in wrappers if key.startswith(w)), key)
        reason = next((r for prefix, r in skips if name.startswith(prefix)), None)
        if reason:
            report.skipped[key] = reason
            continue
        report.place(mapped, key, value, next((m.expand(t) for p, t in compiled if (m := p.fullmatch(name))), None))
    return mapped, report


# kind -> a key only that kind's checkpoints hold (after `module.` and wrapper prefixes)
_SIGNATURES = {"passt": "time_new_pos_embed", "beats": "post_extract_proj.weight"}


def detect_audio_kind(state: dict[str, Any]) -> str | None:
    """`passt` / `beats` / `dcase2025` when the keys are theirs, else None (an HTSAT convention, see
    hade.models.convert)."""
    if is_dcase_checkpoint(state):
        return DCASE_KIND
    keys, _ = strip_module_prefix(extract_state_dict(state))
    for kind, signature in _SIGNATURES.items():
        wrappers = KEY_MAPS[kind][0]
        if any(k == signature or any(k == w + signature for w in wrappers) for k in keys):
            return kind
    return None


def map_encoder_state_dict(state: dict[str, Any], kind: str | None = None,
                           architecture: str | None = None) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Any supported audio checkpoint (HTSAT conventions, PaSST, BEATs) renamed to hade encoder names; `kind`
    is detected from the keys when not given. With `architecture` (the target preset's, e.g. "htsat"), a
    checkpoint of another architecture is an InputError naming both."""
    if kind is None:
        kind = detect_audio_kind(state)
    if kind is not None and kind not in KINDS and kind not in AUDIO_KINDS:
        raise InputError(f"unknown checkpoint kind {kind!r}; known: {list(KINDS) + list(AUDIO_KINDS)}")
    theirs = _ARCHITECTURE.get(kind, "htsat")
    if architecture is not None and architecture != theirs:
        raise InputError(f"the checkpoint holds a {theirs} audio encoder but the preset builds a {architecture} "
                         f"one; pick a {theirs} preset (hade models lists them)")
    if kind == DCASE_KIND:
        return map_dcase_audio(state)
    return map_audio_state_dict(state, kind) if kind in KEY_MAPS else map_state_dict(state, kind)


def load_audio_state_dict(encoder: nn.Module, state: dict[str, Any], kind: str,
                          allow_partial: bool = False) -> ConversionReport:
    """Map `state` by `kind` and load it into `encoder`; a partial load is refused unless `allow_partial`."""
    mapped, report = map_audio_state_dict(state, kind)
    return apply_state_dict(encoder, mapped, report, allow_partial, what=f"the {kind} encoder")


def load_audio_file(encoder: nn.Module, path: str | Path, kind: str, allow_partial: bool = False) -> ConversionReport:
    """`load_audio_state_dict` of a checkpoint file (read without unpickling code)."""
    mapped, report = map_audio_state_dict(read_checkpoint(path), kind)
    report.source = str(path)
    return apply_state_dict(encoder, mapped, report, allow_partial, what=f"the {kind} encoder")


__all__ = ["AUDIO_KINDS", "KEY_MAPS", "detect_audio_kind", "load_audio_file", "load_audio_state_dict",
           "map_audio_state_dict", "map_encoder_state_dict"]
