"""AudioCaps: ``ROOT/{split}.csv`` (audiocap_id,youtube_id,start_time,caption), one row per caption.

Rows are grouped into clips by youtube_id (first-seen order). Audio: ``ROOT/{split}/{youtube_id}.wav``;
the other extensions of ``hade.data.audio.ID_SUFFIXES`` (FLAC, and the M4A/WebM/Opus of YouTube downloads)
and AudioSet-style ``Y{youtube_id}.<ext>`` names are accepted too.
"""
from __future__ import annotations

from pathlib import Path

from hade.data.audio import ID_SUFFIXES
from hade.data.readers._common import ClipCollector, iter_csv, peek_csv_header
from hade.data.types import SplitData

LAYOUT = "audiocaps"
SPLITS = {"train": "train", "val": "val", "test": "test"}
EXPECTED_HEADER = "audiocap_id,youtube_id,start_time,caption"
AUDIO_SUFFIXES = ID_SUFFIXES


def split_file(root: Path, split: str) -> Path:
    return root / f"{split}.csv"


def _looks_like(path: Path) -> bool:
    """A youtube_id column makes a CSV AudioCaps'; a missing caption column is then reported by `read`
    against the expected header (rather than the file being ignored as "no known layout")."""
    return "youtube_id" in peek_csv_header(path)


def splits_in(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.csv") if p.is_file() and _looks_like(p))


def sniff_file(path: Path) -> bool:
    return path.suffix.lower() == ".csv" and _looks_like(path)


def split_from_file(path: Path) -> str:
    return path.stem


def audio_candidates(audio_dir: Path, youtube_id: str) -> list[Path]:
    names = [youtube_id]
    if not youtube_id.startswith("Y"):
        names.append("Y" + youtube_id)
    return [audio_dir / f"{n}{ext}" for n in names for ext in AUDIO_SUFFIXES]


def read(path: Path, name: str, audio_dir: Path | None = None, verify_audio: bool = True) -> SplitData:
    """Read one AudioCaps CSV. Audio defaults to ``<csv folder>/<split>/``."""
    _, rows = iter_csv(path, required=("youtube_id", "caption"), expected_header=EXPECTED_HEADER)
    audio_root = audio_dir if audio_dir is not None else path.parent / split_from_file(path)
    out = ClipCollector(name, verify_audio)
    groups: dict[str, tuple[int, list[str]]] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        ytid = row["youtube_id"].strip()
        if not ytid:
            out.problem(where, "empty 'youtube_id'; row skipped")
            continue
        entry = groups.setdefault(ytid, (line, []))
        caption = out.caption(row["caption"], where, "caption")
        if caption is not None:
            entry[1].append(caption)
    for ytid, (line, captions) in groups.items():
        where = f"{path}:{line}"
        candidates = audio_candidates(audio_root, ytid)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None and verify_audio and captions:
            tried = ", ".join(c.name for c in candidates[1:])
            out.add_audio_problem(candidates[0], f"file not found (also tried {tried})", ytid, where)
            continue
        out.add(ytid, found if found is not None else candidates[0], captions, where)
    return out.split
