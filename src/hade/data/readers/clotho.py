"""Clotho: ``ROOT/clotho_captions_{split}.csv`` (file_name,caption_1..caption_5), audio ``ROOT/{split}/{file_name}``."""
from __future__ import annotations

import re
from pathlib import Path

from hade.data.readers._common import ClipCollector, iter_csv, peek_csv_header
from hade.data.types import SplitData

LAYOUT = "clotho"
SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}
EXPECTED_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5"
_PREFIX = "clotho_captions_"
_CAPTION_COLUMN = re.compile(r"caption_(\d+)")


def split_file(root: Path, split: str) -> Path:
    return root / f"{_PREFIX}{split}.csv"


def splits_in(root: Path) -> list[str]:
    return sorted(p.name[len(_PREFIX) : -len(".csv")] for p in root.glob(f"{_PREFIX}*.csv") if p.is_file())


def sniff_file(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    if path.name.startswith(_PREFIX):
        return True
    header = peek_csv_header(path)
    return "file_name" in header and any(_CAPTION_COLUMN.fullmatch(h) for h in header)


def split_from_file(path: Path) -> str:
    stem = path.stem
    return stem[len(_PREFIX) :] if stem.startswith(_PREFIX) and len(stem) > len(_PREFIX) else stem


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read one Clotho captions CSV. Audio defaults to ``<csv folder>/<split>/<file_name>``."""
    header, rows = iter_csv(path, required=("file_name", "caption_1"), expected_header=EXPECTED_HEADER)
    caption_cols = sorted(
        (h for h in header if _CAPTION_COLUMN.fullmatch(h)), key=lambda h: int(h.split("_", 1)[1])
    )
    audio_root = audio_dir if audio_dir is not None else path.parent / split_from_file(path)
    out = ClipCollector(name, verify_audio)
    for line, row in rows:
        where = f"{path}:{line}"
        file_name = row["file_name"].strip()
        captions = [c for c in (out.caption(row[col], where, col) for col in caption_cols) if c is not None]
        out.add(file_name, audio_root / file_name, captions, where)
    return out.split
