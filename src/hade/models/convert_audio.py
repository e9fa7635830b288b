"""Explicit key maps from the public PaSST and BEATs checkpoints to hade's encoders.

* ``passt``: PaSST's AudioSet checkpoints as ``hear21passt`` loads them (the bare ``PaSST`` state dict:
  ``patch_embed.proj.*``, ``cls_token``, ``dist_token``, ``new_pos_embed``, ``freq_new_pos_embed``,
  ``time_new_pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``),
  also wrapped as hear21passt's ``PasstBasicWrapper`` (``net.*``). The AudioSet classifier (``head.*``,
  ``head_dist.*``) is skipped.

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
from hade.models.convert import (ConversionReport, apply_state_dict, extract_state_dict, read_checkpoint,
                                 strip_module_prefix)

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
}
AUDIO_KINDS = tuple(KEY_MAPS)


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
        target = next((m.expand(t) for p, t in compiled if (m := p.fullmatch(name))), None)
        if target is None:
            report.unexpected[key] = f"not in the {kind} key map"
        elif not isinstance(value, torch.Tensor):
            report.unexpected[key] = f"not a tensor ({type(value).__name__})"
        else:
            mapped[target] = value
    return mapped, report


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


__all__ = ["AUDIO_KINDS", "KEY_MAPS", "load_audio_file", "load_audio_state_dict", "map_audio_state_dict"]
