"""Clotho: ``ROOT/clotho_captions_{split}.csv`` (file_name,caption_1..caption_5), audio ``ROOT/{split}/{file_name}``."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from hade.data.readers._common import ClipCollector, iter_csv, peek_csv_header
from hade.data.types import SplitData
from hade.errors import InputError

LAYOUT = "clotho"
SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}
EXPECTED_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5"
_PREFIX = "clotho_captions_"
_CAPTION_COLUMN = re.compile(r"caption_(\d+)")
NUM_CAPTIONS = 5  # every Clotho clip has five reference captions


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


def _caption_columns(path: Path, header: list[str]) -> list[str]:
    """The caption columns of `header`, in order. A gap (caption_1,caption_2,caption_4) is an InputError,
    and so is a file named like Clotho's (clotho_captions_*.csv) without all five: a lost column would
    silently drop a reference caption of every clip, and Clotho's protocol scores against all five. Other
    CSV files in this layout may carry fewer captions per clip: a warning names the missing columns."""
    numbers = sorted(int(m.group(1)) for m in map(_CAPTION_COLUMN.fullmatch, header) if m)
    gaps = [f"caption_{n}" for n in range(1, numbers[-1] + 1) if n not in numbers]
    short = [f"caption_{n}" for n in range(numbers[-1] + 1, NUM_CAPTIONS + 1)]
    if gaps or (short and path.name.startswith(_PREFIX)):
        raise InputError(f"{path}: missing caption column(s) {', '.join(gaps + short)}; "
                         f"expected header '{EXPECTED_HEADER}', found '{','.join(header)}'")
    if short:
        warnings.warn(f"{path}: only {numbers[-1]} caption column(s); Clotho has {NUM_CAPTIONS} "
                      f"(missing {', '.join(short)})", UserWarning, stacklevel=3)
    return [f"caption_{n}" for n in numbers]


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read one Clotho captions CSV. Audio defaults to ``<csv folder>/<split>/<file_name>``."""
    header, rows = iter_csv(path, required=("file_name", "caption_1"), expected_header=EXPECTED_HEADER)
    caption_cols = _caption_columns(path, header)
    audio_root = audio_dir if audio_dir is not None else path.parent / split_from_file(path)
    out = ClipCollector(name, verify_audio)
    for line, row in rows:
        where = f"{path}:{line}"
        file_name = row["file_name"].strip()
        captions = [c for c in (out.caption(row[col], where, col) for col in caption_cols) if c is not None]
        out.add(file_name, audio_root / file_name, captions, where)
    return out.split
