"""Manifest: JSON Lines ``ROOT/{split}.jsonl``, one ``{"audio": path, "captions": [str, ...], "id"?: str}`` per line.

Relative audio paths resolve against the manifest's folder. Without "id" the audio path (as written)
is the clip id. Lines with the same id and audio are merged (one line per caption is fine).
"""
from __future__ import annotations

import json
from pathlib import Path

from hade.data.readers._common import ClipCollector, read_text, resolve_path, type_name
from hade.data.types import SplitData
from hade.errors import InputError

LAYOUT = "manifest"
SPLITS = {"train": "train", "val": "val", "test": "test"}
SUFFIXES = (".jsonl", ".ndjson")
EXPECTED_LINE = '{"audio": "path.wav", "captions": ["...", ...], "id": "optional"}'


def split_file(root: Path, split: str) -> Path:
    return root / f"{split}.jsonl"


def splits_in(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.jsonl") if p.is_file())


def sniff_file(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def split_from_file(path: Path) -> str:
    return path.stem


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read one JSON Lines manifest. ``audio_dir`` (if given) replaces the manifest folder as the base of relative paths."""
    text = read_text(path, "manifest")
    base = audio_dir if audio_dir is not None else path.parent
    out = ClipCollector(name, verify_audio)
    entries: dict[str, tuple[Path, list[str], str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON at column {exc.colno} ({exc.msg}); expected one object per line like {EXPECTED_LINE}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object like {EXPECTED_LINE}, found {type_name(obj)}")
        audio = obj.get("audio")
        if audio is None:
            raise InputError(f"{where}: missing field 'audio'; expected a path string")
        if not isinstance(audio, str) or not audio.strip():
            raise InputError(f"{where}: field 'audio': expected a non-empty path string, found {type_name(audio)}")
        if "captions" not in obj:
            raise InputError(f"{where}: missing field 'captions'; expected an array of strings")
        caps = obj["captions"]
        if not isinstance(caps, list):
            raise InputError(f"{where}: field 'captions': expected an array of strings, found {type_name(caps)}")
        raw_id = obj.get("id")
        if raw_id is None:
            clip_id = audio.strip()
        elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(f"{where}: field 'id': expected a string or number, found {type_name(raw_id)}")
        else:
            clip_id = str(raw_id).strip()
        captions: list[str] = []
        for j, c in enumerate(caps):
            if not isinstance(c, str):
                raise InputError(f"{where}: field 'captions[{j}]': expected a string, found {type_name(c)}")
            text_c = out.caption(c, where, f"captions[{j}]")
            if text_c is not None:
                captions.append(text_c)
        audio_path = resolve_path(audio.strip(), base)
        if not clip_id:
            out.problem(where, "empty 'id'; line skipped")
            continue
        if clip_id in entries:
            prev_path, prev_caps, prev_where = entries[clip_id]
            if prev_path != audio_path:
                out.problem(where, f"duplicate id {clip_id!r} with a different audio path than {prev_where}; line skipped")
            else:
                prev_caps.extend(captions)
            continue
        entries[clip_id] = (audio_path, captions, where)
    for clip_id, (audio_path, captions, where) in entries.items():
        out.add(clip_id, audio_path, captions, where)
    return out.split
