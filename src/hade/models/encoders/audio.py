"""The audio encoder architectures behind one contract, and the registry that builds them from presets.

Every audio encoder is an `nn.Module` with a `config` (sample_rate, max_samples, to_dict/from_dict,
geometry()), `levels` (its `AudioLevels` declaration, also `levels_for(config)` without building it),
`max_samples`, `set_grad_checkpointing(enabled)`, and `forward(waveform [B, T]) -> AudioFeatures`.
A preset names its architecture (`"encoder"` in its JSON file); callers build encoders through
`audio_encoder_config` and `build_audio_encoder`, never from a concrete class.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from torch import nn

from hade.errors import HadeError, InputError
from hade.models.encoders.beats import BEATsConfig, BEATsEncoder
from hade.models.encoders.htsat import HTSATConfig, HTSATEncoder
from hade.models.encoders.passt import PaSSTConfig, PaSSTEncoder
from hade.models.encoders.types import AudioLevels
from hade.models.presets import PRESET_PATH_ENV, all_presets


class Architecture(NamedTuple):
    config: type
    encoder: type


ARCHITECTURES: dict[str, Architecture] = {
    "htsat": Architecture(HTSATConfig, HTSATEncoder),
    "passt": Architecture(PaSSTConfig, PaSSTEncoder),
    "beats": Architecture(BEATsConfig, BEATsEncoder),
}


def register_architecture(name: str, config: type, encoder: type) -> None:
    """Add an audio encoder architecture that presets may name (`"encoder": name`)."""
    ARCHITECTURES[name] = Architecture(config, encoder)


def _architecture_of(config: Any) -> Architecture:
    for arch in ARCHITECTURES.values():
        if type(config) is arch.config:
            return arch
    raise InputError(f"no audio encoder architecture takes a {type(config).__name__}")


def audio_encoder_config(preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config of preset `preset` with `overrides` (fields of its architecture's config) applied."""
    presets = all_presets()
    if preset not in presets:
        raise InputError(f"audio_encoder: unknown preset {preset!r}; available: {sorted(presets)} "
                         f"(add presets as JSON files in a folder named by {PRESET_PATH_ENV})")
    p = presets[preset]
    if p.encoder not in ARCHITECTURES:
        raise InputError(f"preset {p.source}: no audio encoder architecture {p.encoder!r} in this hade")
    cls = ARCHITECTURES[p.encoder].config
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides or {}) - valid)
    if unknown:
        raise InputError(f"audio_overrides: unknown {cls.__name__} field(s) {unknown} for preset {preset!r}; "
                         f"valid: {sorted(valid)}")
    try:
        return cls.from_dict({**p.config, **(overrides or {})})
    except HadeError as exc:
        raise InputError(f"preset {p.source}: {exc}") from None


def build_audio_encoder(config: Any) -> nn.Module:
    """The encoder of an architecture's config (from `audio_encoder_config`)."""
    return _architecture_of(config).encoder(config)


def audio_levels(config: Any) -> AudioLevels:
    """The levels an encoder of `config` declares, without building it."""
    return _architecture_of(config).encoder.levels_for(config)


def architecture_name(config: Any) -> str:
    return next(name for name, arch in ARCHITECTURES.items() if type(config) is arch.config)


__all__ = ["ARCHITECTURES", "audio_encoder_config", "audio_levels", "architecture_name", "build_audio_encoder",
           "register_architecture"]
