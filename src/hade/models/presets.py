"""Audio encoder presets as data: JSON files a user can list and extend (as open_clip's `model_configs`).

A preset is one JSON file whose name (without `.json`) is the preset's name::

    {"encoder": "htsat", "description": "one line", "config": {<HTSATConfig fields>}}

`config` fields left out take the HTSATConfig defaults (those of HTS-AT "tiny"). The shipped presets live
in `hade/models/preset_configs/`; more are read from the folders named in the environment variable
`HADE_PRESET_PATH` (separated like PATH), or added in code with `register_preset`. A name may be defined
once: a checkpoint stores its preset's name (ModelConfig.audio_encoder), so a user file that redefined a
shipped preset would silently change how existing checkpoints load.

This module reads JSON only; the encoder turns a preset's `config` into its config class
(`hade.models.encoders.htsat.HTSAT_PRESETS` is the `PresetMapping` that does it).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from hade.errors import HadeError, InputError

PRESET_PATH_ENV = "HADE_PRESET_PATH"
BUILTIN_DIR = Path(__file__).resolve().parent / "preset_configs"
ENCODERS = ("htsat", "passt", "beats")  # audio encoder architectures a preset may name

T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    """One audio encoder preset: its name, architecture, a one-line description, the config fields, and
    where it came from (a JSON file, or "<code>" for `register_preset`)."""

    name: str
    encoder: str
    description: str
    config: dict[str, Any] = field(hash=False)
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": self.encoder, "description": self.description,
                "config": dict(self.config), "source": self.source}


_registered: dict[str, Preset] = {}  # presets added in code (register_preset)


def preset_from_dict(name: str, data: Any, source: str) -> Preset:
    """Validate the JSON object of one preset (InputError naming `source` and the field)."""
    if not isinstance(data, dict):
        raise InputError(f"preset {source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"encoder", "description", "config"})
    if unknown:
        raise InputError(f"preset {source}: unknown field(s) {unknown}; expected encoder, description, config")
    encoder = data.get("encoder", "htsat")
    if encoder not in ENCODERS:
        raise InputError(f"preset {source}: 'encoder' must be one of {list(ENCODERS)}, got {encoder!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InputError(f"preset {source}: 'description' must be a string, got {description!r}")
    config = data.get("config")
    if not isinstance(config, dict):
        raise InputError(f"preset {source}: 'config' must be a JSON object of {encoder} config fields")
    if not name or name.strip() != name:
        raise InputError(f"preset {source}: the name {name!r} is empty or has surrounding spaces")
    return Preset(name, encoder, description, dict(config), source)


def load_preset_file(path: str | Path) -> Preset:
    """The preset in one JSON file (its name is the file name without `.json`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"preset {path}: not a readable JSON file ({exc})") from None
    return preset_from_dict(path.stem, data, str(path))


def user_preset_dirs() -> list[Path]:
    """The folders named by HADE_PRESET_PATH (empty entries ignored); a missing folder is an InputError."""
    dirs = [Path(p).expanduser() for p in os.environ.get(PRESET_PATH_ENV, "").split(os.pathsep) if p.strip()]
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"{PRESET_PATH_ENV}: {d} is not a folder (expected folders of preset JSON files)")
    return dirs


def _add(found: dict[str, Preset], preset: Preset) -> None:
    if preset.name in found:
        raise InputError(f"preset {preset.name!r} is defined twice: in {found[preset.name].source} and in "
                         f"{preset.source}; rename one (a preset's name may not be redefined)")
    found[preset.name] = preset


def all_presets() -> dict[str, Preset]:
    """Every preset by name: shipped, then those of HADE_PRESET_PATH, then those registered in code.

    Read on each call, so files added to a preset folder are seen without restarting."""
    found: dict[str, Preset] = {}
    for folder in [BUILTIN_DIR, *user_preset_dirs()]:
        for path in sorted(folder.glob("*.json")):
            _add(found, load_preset_file(path))
    for preset in _registered.values():
        _add(found, preset)
    return found


def list_presets() -> list[str]:
    """Names of every audio encoder preset, sorted (as open_clip's `list_models()`)."""
    return sorted(all_presets())


def get_preset(name: str) -> Preset:
    """The preset `name`; InputError listing the available ones when there is none."""
    presets = all_presets()
    if name not in presets:
        raise InputError(f"unknown audio encoder preset {name!r}; available: {sorted(presets)} "
                         f"(add one as a JSON file in a folder named by {PRESET_PATH_ENV})")
    return presets[name]


def register_preset(name: str, config: dict[str, Any], description: str = "", encoder: str = "htsat") -> Preset:
    """Add a preset in code (for this process); the same rules as a file (a name may be defined once)."""
    preset = preset_from_dict(name, {"encoder": encoder, "description": description, "config": config}, "<code>")
    if name in all_presets():
        raise InputError(f"preset {name!r} already exists ({get_preset(name).source}); pick another name")
    _registered[name] = preset
    return preset


def unregister_preset(name: str) -> None:
    """Remove a preset added with `register_preset` (no error when there is none)."""
    _registered.pop(name, None)


class PresetMapping(Mapping[str, T], Generic[T]):
    """Read-only view `name -> config object` of the presets of one encoder, built by `build(config dict)`.

    Each lookup builds a fresh object, so callers may change what they get. A config the builder rejects
    is an InputError naming the preset's file."""

    def __init__(self, encoder: str, build: Callable[[dict[str, Any]], T]) -> None:
        self.encoder = encoder
        self._build = build

    def _presets(self) -> dict[str, Preset]:
        return {n: p for n, p in all_presets().items() if p.encoder == self.encoder}

    def __getitem__(self, name: str) -> T:
        preset = self._presets().get(name)
        if preset is None:
            raise KeyError(name)
        try:
            return self._build(dict(preset.config))
        except HadeError as exc:
            raise InputError(f"preset {preset.source}: {exc}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._presets()))

    def __len__(self) -> int:
        return len(self._presets())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._presets()


__all__ = ["PRESET_PATH_ENV", "Preset", "PresetMapping", "all_presets", "get_preset", "list_presets",
           "load_preset_file", "register_preset", "unregister_preset", "user_preset_dirs"]
