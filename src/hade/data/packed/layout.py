"""The packed layout as a data-set reader (the interface of :mod:`hade.data.readers`' modules).

``read_split(PACKED, split)`` finds a packed set by its marker file and returns the clips in the order of
the source split, with their ids, captions and virtual audio paths; the files skipped while packing come
back as the split's Problems, as reading the source folder reports them.
"""
from __future__ import annotations

import json
from pathlib import Path

from hade.data.packed.shards import MARKER, REPORT, SHARD_SUFFIX, read_marker, virtual_path
from hade.data.types import Clip, Problem, SplitData
from hade.errors import AudioError, InputError

LAYOUT = "packed"
SPLITS = {"train": "train", "val": "val", "test": "test"}
CLIPS_FILE = "clips.jsonl"
EXPECTED_LINE = '{"id": str, "captions": [str, ...], "name": str, "shard": "shard-00000.pcm16", "row": int}'


def is_packed_root(root: Path) -> bool:
    return (root / MARKER).is_file()


def split_file(root: Path, split: str) -> Path:
    return root / split / CLIPS_FILE


def splits_in(root: Path) -> list[str]:
    if not is_packed_root(root):
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{CLIPS_FILE}") if p.is_file())


def sniff_file(path: Path) -> bool:
    return path.name == CLIPS_FILE and is_packed_root(path.parent.parent)


def split_from_file(path: Path) -> str:
    return path.parent.name


def _clip(obj: object, where: str, split_dir: Path) -> Clip:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object like {EXPECTED_LINE}")
    clip_id, captions, name, shard, row = (obj.get(k) for k in ("id", "captions", "name", "shard", "row"))
    ok = (isinstance(clip_id, str) and isinstance(name, str) and isinstance(shard, str) and shard.endswith(SHARD_SUFFIX)
          and isinstance(row, int) and not isinstance(row, bool) and row >= 0 and isinstance(captions, list)
          and captions and all(isinstance(c, str) for c in captions))
    if not ok:
        raise InputError(f"{where}: malformed packed clip line; expected {EXPECTED_LINE}")
    return Clip(clip_id=clip_id, audio_path=virtual_path(split_dir, shard, row, name), captions=tuple(captions))


def _report_problems(root: Path, split: str) -> list[Problem]:
    path = root / REPORT
    if not path.is_file():
        return []
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable pack report ({exc}); expected the JSON `hade pack` writes") from None
    rows = report.get("splits", {}).get(split, []) if isinstance(report, dict) else []
    return [Problem(source=str(r.get("source", "")), reason=str(r.get("reason", ""))) for r in rows if isinstance(r, dict)]


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read ``<split>/clips.jsonl`` of a packed set. ``audio_dir`` must be None (the audio is in the shards);
    ``verify_audio`` checks that every shard the split names is present."""
    if audio_dir is not None:
        raise InputError(f"{path}: a packed set holds its audio in its shards; audio_dir must not be given")
    split_dir, root = path.parent, path.parent.parent
    try:
        read_marker(root)
    except AudioError as exc:
        raise InputError(str(exc)) from None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read packed split file {path}: {exc.strerror or exc}") from None
    clips: list[Clip] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: invalid JSON at column {exc.colno} ({exc.msg}); expected {EXPECTED_LINE}") from None
        clips.append(_clip(obj, f"{path}:{lineno}", split_dir))
    if verify_audio:
        for shard in sorted({c.audio_path.parent.parent for c in clips}):
            if not shard.is_file():
                raise InputError(f"{path}: shard {shard} is missing; re-run `hade pack` to complete the set")
    return SplitData(name=name, clips=clips, problems=_report_problems(root, split_dir.name))


__all__ = ["CLIPS_FILE", "LAYOUT", "SPLITS", "is_packed_root", "read", "sniff_file", "split_file", "split_from_file",
           "splits_in"]
