"""WavCaps: ``ROOT/{split}.json`` = ``{"data": [{"id", "audio"?, "caption" | "caption_1".."caption_5", ...}]}``.

``audio`` (relative paths resolve against the JSON file's folder); without it the audio is
``ROOT/{split}/{id}.wav`` (or another extension of ``hade.data.audio.ID_SUFFIXES``). ``num_captions_per_audio`` is optional.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hade.data.audio import AUDIO_EXTENSIONS, ID_SUFFIXES
from hade.data.readers._common import ClipCollector, load_json, resolve_path, type_name
from hade.data.types import SplitData
from hade.errors import InputError

LAYOUT = "wavcaps"
SPLITS = {"train": "train", "val": "val", "test": "test"}
AUDIO_SUFFIXES = ID_SUFFIXES
_CAPTION_KEY = re.compile(r"caption_(\d+)")


def split_file(root: Path, split: str) -> Path:
    return root / f"{split}.json"


def _looks_like(path: Path, known_splits: set[str]) -> bool:
    if path.stem.lower() in known_splits:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"data"' in head


def splits_in(root: Path, known_splits: set[str] = frozenset()) -> list[str]:
    return sorted(p.stem for p in root.glob("*.json") if p.is_file() and _looks_like(p, set(known_splits)))


def sniff_file(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def split_from_file(path: Path) -> str:
    return path.stem


def _captions(entry: dict, path: Path, where: str, out: ClipCollector) -> list[str]:
    keys: list[str] = []
    if "caption" in entry:
        keys.append("caption")
    keys += sorted((k for k in entry if _CAPTION_KEY.fullmatch(k)), key=lambda k: int(k.split("_", 1)[1]))
    if not keys:
        raise InputError(f"{path}: {where}: missing field 'caption' (or 'caption_1'..'caption_5'); expected caption string(s)")
    captions: list[str] = []
    for key in keys:
        value = entry[key]
        values = value if key == "caption" and isinstance(value, list) else [value]
        for j, v in enumerate(values):
            field = f"{key}[{j}]" if values is value else key
            if not isinstance(v, str):
                raise InputError(f"{path}: {where}.{field}: expected a string caption, found {type_name(v)}")
            text = out.caption(v, f"{path}: {where}", field)
            if text is not None:
                captions.append(text)
    return captions


def _check_document(doc: Any, path: Path) -> list[Any]:
    """The 'data' array of a WavCaps JSON document, after checking its shape."""
    if not isinstance(doc, dict) or "data" not in doc:
        found = f"an object with keys {sorted(doc)[:10]}" if isinstance(doc, dict) else type_name(doc)
        raise InputError(f"{path}: expected a JSON object with a 'data' array, found {found}")
    data = doc["data"]
    if not isinstance(data, list):
        raise InputError(f"{path}: field 'data': expected an array of objects, found {type_name(data)}")
    if "num_captions_per_audio" in doc:
        n = doc["num_captions_per_audio"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{path}: field 'num_captions_per_audio': expected a positive integer, found {n!r}")
    return data


def _clip_id(entry: Any, path: Path, where: str) -> str:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: {where}: expected an object, found {type_name(entry)}")
    if "id" not in entry:
        raise InputError(f"{path}: {where}: missing field 'id'; expected a string or number")
    raw_id = entry["id"]
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise InputError(f"{path}: {where}.id: expected a string or number, found {type_name(raw_id)}")
    return str(raw_id).strip()


def _audio_candidates(audio_root: Path, clip_id: str) -> list[Path]:
    """Where a clip without an 'audio' field may be: ID.EXT for every audio extension (ID itself first when it
    already ends in one)."""
    candidates = [audio_root / f"{clip_id}{ext}" for ext in AUDIO_SUFFIXES]
    if Path(clip_id).suffix.lower() in AUDIO_EXTENSIONS:
        candidates.insert(0, audio_root / clip_id)
    return candidates


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read one WavCaps-style JSON file."""
    data = _check_document(load_json(path, "WavCaps JSON"), path)
    audio_root = audio_dir if audio_dir is not None else path.parent / split_from_file(path)
    out = ClipCollector(name, verify_audio)
    for i, entry in enumerate(data):
        where = f"data[{i}]"
        clip_id = _clip_id(entry, path, where)
        captions = _captions(entry, path, where, out)
        audio = entry.get("audio")
        if audio is not None:
            if not isinstance(audio, str) or not audio.strip():
                raise InputError(f"{path}: {where}.audio: expected a non-empty path string, found {audio!r}")
            audio_path = resolve_path(audio.strip(), path.parent)
        else:
            candidates = _audio_candidates(audio_root, clip_id)
            audio_path = next((c for c in candidates if c.is_file()), candidates[0])
            if verify_audio and captions and not audio_path.is_file():
                tried = ", ".join(c.name for c in candidates if c != audio_path)
                out.add_audio_problem(audio_path, f"file not found (also tried {tried})", clip_id, f"{path}: {where}")
                continue
        out.add(clip_id, audio_path, captions, f"{path}: {where}")
    return out.split
