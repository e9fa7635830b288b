"""Retrieval heads behind one interface, and the registry that builds them by name.

Names of HADE's tables: `dp`, `tha`, `tha+dp`, `dcr`, `tha+dcr`, and Table 3's `dp+ld`, `dp+ld+la`,
`dp+ld+la+ca` (= `dcr`); the co-attention networks of Sun et al. as `coatt-single`, `coatt-stacked`,
`coatt-iterated`; DiffATR's generative scoring as `diffatr`; hierarchical cross-modal interaction as `hci` and, with
auxiliary captions, `hci+ac`. Options (`ModelConfig.head_options`) are routed to the part whose constructor
takes them (e.g. `lam` to THA, `factors`/`alpha`/`beta` to DCR).
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Callable

from hade.errors import InputError
from hade.models.encoders.types import AudioLevels
from hade.models.heads.base import HeadCapabilities, RetrievalHead, score_all
from hade.models.heads.coattention import build_coattention
from hade.models.heads.composite import SumHead
from hade.models.heads.dcr import FactorHead
from hade.models.heads.diffatr import build_diffatr
from hade.models.heads.hci import HCI_BUILDERS
from hade.models.heads.dp import DPHead
from hade.models.heads.tha import THAHead

# name -> builder(audio_levels, text_dim, text_layers, embed_dim, options) -> head. The audio encoder's
# AudioLevels give the token heads their levels, widths and default level/text-block matches.
HEADS: dict[str, Callable[..., RetrievalHead]] = {}


def register_head(name: str) -> Callable[[Callable[..., RetrievalHead]], Callable[..., RetrievalHead]]:
    def wrap(builder: Callable[..., RetrievalHead]) -> Callable[..., RetrievalHead]:
        HEADS[name] = builder
        return builder

    return wrap


def _take(cls: type, options: dict[str, Any], used: set[str]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    picked = {k: v for k, v in options.items() if k in params}
    used.update(picked)
    return picked


def _factor_flags(name: str) -> dict[str, bool] | None:
    """dp -> no factor losses; dp+ld(+la)(+ca) -> Table 3 rows; dcr -> all."""
    parts = [p for p in name.split("+") if p != "tha"]
    if parts == ["dcr"]:
        return {"use_ld": True, "use_la": True, "use_ca": True}
    if parts and parts[0] == "dp" and set(parts[1:]) <= {"ld", "la", "ca"}:
        return {"use_ld": "ld" in parts, "use_la": "la" in parts, "use_ca": "ca" in parts}
    return None


def canonical_head(name: str) -> str:
    """The one name of the head that `name` builds: `dp+ld+la+ca` (Table 3's last row) is `dcr`, and
    `tha+dp+ld+la+ca` is `tha+dcr`; every other name is its own."""
    flags = _factor_flags(name)
    if flags is None or not all(flags.values()):
        return name
    return "tha+dcr" if "tha" in name.split("+") else "dcr"


def _tha_options(levels: AudioLevels, text_layers: int, options: dict[str, Any], used: set[str]) -> dict[str, Any]:
    """THA's options with the encoder's declared levels and their text blocks as defaults."""
    opts = _take(THAHead, options, used)
    if "audio_stages" not in opts:
        opts["audio_stages"] = levels.aligned
        opts.setdefault("text_blocks", levels.text_blocks(text_layers))
    return opts


def _composite_builder(name: str) -> Callable[..., RetrievalHead]:
    def build(levels: AudioLevels, text_dim: int, text_layers: int, embed_dim: int,
              options: dict[str, Any]) -> RetrievalHead:
        used: set[str] = set()
        parts: dict[str, RetrievalHead] = {}
        audio_dims = list(levels.dims)
        if "tha" in name.split("+"):
            parts["tha"] = THAHead(audio_dims, text_dim, text_layers, embed_dim,
                                   **_tha_options(levels, text_layers, options, used))
        flags = _factor_flags(name)
        if flags is not None:
            if not any(flags.values()):
                parts["dp"] = DPHead(audio_dims, text_dim, embed_dim, **_take(DPHead, options, used))
            else:
                opts = _take(FactorHead, options, used)
                parts["dcr"] = FactorHead(audio_dims, text_dim, embed_dim, **{**opts, **flags})
        if len(parts) > 1:
            used.update(_take(SumHead, options, set()))
        unknown = sorted(set(options) - used)
        if unknown:
            raise InputError(f"head_options: {unknown} are not options of head {name!r}")
        if len(parts) == 1:
            return next(iter(parts.values()))
        return SumHead(parts, **_take(SumHead, options, set()))

    return build


for _name in ("dp", "tha", "tha+dp", "dcr", "tha+dcr", "dp+ld", "dp+ld+la", "dp+ld+la+ca"):
    register_head(_name)(_composite_builder(_name))


def _with_design(design: str) -> Callable[..., RetrievalHead]:
    def build(levels: AudioLevels, text_dim: int, text_layers: int, embed_dim: int,
              options: dict[str, Any]) -> RetrievalHead:
        return build_coattention(list(levels.dims), text_dim, text_layers, embed_dim, {**options, "design": design})

    return build


for _design in ("single", "stacked", "iterated"):
    register_head(f"coatt-{_design}")(_with_design(_design))



@register_head("diffatr")
def _diffatr(levels: AudioLevels, text_dim: int, text_layers: int, embed_dim: int,
             options: dict[str, Any]) -> RetrievalHead:
    return build_diffatr(list(levels.dims), text_dim, text_layers, embed_dim, options)


for _name, _builder in HCI_BUILDERS.items():  # hci, hci+ac
    register_head(_name)(_builder)


def build_head(name: str, audio_levels: AudioLevels, text_dim: int, text_layers: int, embed_dim: int,
               options: dict[str, Any] | None = None) -> RetrievalHead:
    """Head `name` over an audio encoder that declares `audio_levels` (`encoder.levels`) and a text encoder of
    `text_layers` blocks of width `text_dim`; InputError for an unknown head or a bad option."""
    if not isinstance(audio_levels, AudioLevels):  # a plain list of widths was the old signature
        raise TypeError(f"build_head: audio_levels must be an AudioLevels, got {type(audio_levels).__name__}")
    if name not in HEADS:
        raise InputError(f"head: unknown head {name!r}; available heads are {sorted(HEADS)}")
    try:
        return HEADS[name](audio_levels, text_dim, text_layers, embed_dim, dict(options or {}))
    except (TypeError, ValueError) as e:
        raise InputError(f"head {name!r}: {e}") from None


# Small dimensions: a head is built only to read its capabilities (they may depend on options, e.g. hci+ac).
PROBE_LEVELS = AudioLevels.swin_stages([16, 32, 64, 128])
PROBE_DIMS: dict[str, Any] = dict(text_dim=32, text_layers=2, embed_dim=16)


@lru_cache(maxsize=None)
def head_capabilities(name: str) -> HeadCapabilities:
    """The declared capabilities of the registered head `name` with its default options (built small)."""
    return build_head(name, PROBE_LEVELS, **PROBE_DIMS).capabilities


def pooled_heads() -> list[str]:
    """Names of the registered heads that have pooled vectors (`HeadCapabilities.has_pooled`), sorted."""
    return sorted(name for name in HEADS if head_capabilities(name).has_pooled)


__all__ = ["HEADS", "PROBE_DIMS", "PROBE_LEVELS", "HeadCapabilities", "RetrievalHead", "build_head", "head_capabilities", "pooled_heads",
           "register_head", "score_all"]
