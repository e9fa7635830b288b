"""The shard format of packed data sets: int16 samples back to back plus an offsets table.

Reading is by virtual path (see :mod:`hade.data.packed`): ``<split dir>/shard-00000.pcm16/<row>/<name>``.
Each process maps a shard once (an LRU of open maps), so DataLoader workers share the page cache and
read only the pages of the clips they are asked for.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hade.errors import AudioError

FORMAT = "hade-packed"
VERSION = 1
MARKER = "hade-packed.json"
REPORT = "pack-report.json"
SHARD_SUFFIX = ".pcm16"
INDEX_SUFFIX = ".index.npy"
META_SUFFIX = ".meta.json"
DTYPE = "int16"
FULL_SCALE = 32768  # int16 step 1/32768, as libsndfile reads 16-bit PCM: such sources round-trip exactly
INT16_MAX = 32767
INDEX_DTYPE = np.dtype([("offset", "<i8"), ("length", "<i8"), ("scale", "<f4")])
_OPEN_SHARDS = 64  # shard maps kept open per process


@dataclass(frozen=True)
class PackedRef:
    """Where one packed clip lives: its shard file and its row in the shard's offsets table."""

    shard: Path
    row: int


def packed_ref(path: str | Path) -> PackedRef | None:
    """The :class:`PackedRef` a virtual audio path names, or None for an ordinary file path (cheap: no IO)."""
    parts = Path(path).parts
    if len(parts) < 3 or not parts[-3].endswith(SHARD_SUFFIX) or not parts[-2].isdigit():
        return None
    return PackedRef(shard=Path(*parts[:-2]), row=int(parts[-2]))


def virtual_path(split_dir: Path, shard_name: str, row: int, name: str) -> Path:
    """``split_dir/shard_name/row/name``: the audio path of a packed clip."""
    return split_dir / shard_name / str(row) / name


def index_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(SHARD_SUFFIX)] + INDEX_SUFFIX)


def meta_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(SHARD_SUFFIX)] + META_SUFFIX)


def shard_name(number: int) -> str:
    return f"shard-{number:05d}{SHARD_SUFFIX}"


def _error(path: Path, reason: str) -> AudioError:
    err = AudioError(f"packed audio {path}: {reason}; expected a shard written by `hade pack` "
                     f"(with its {INDEX_SUFFIX} offsets table and the set's {MARKER})")
    err.path = path  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


def read_marker(root: Path) -> dict:
    """The parsed ``hade-packed.json`` of packed set ``root`` (AudioError naming it when unusable)."""
    path = root / MARKER
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _error(path, f"unreadable marker ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("sample_rate"), int):
        raise _error(path, f"not a {FORMAT} marker (needs 'format': {FORMAT!r} and an integer 'sample_rate')")
    if meta.get("version") != VERSION:
        raise _error(path, f"format version {meta.get('version')!r}; this hade reads version {VERSION}")
    return meta


def shard_damage(shard: Path) -> str | None:
    """Why a written shard cannot be read back in full (its offsets table unreadable, or reaching past the
    samples the file holds, e.g. a file truncated after it was written), or None when it is whole."""
    try:
        table = np.load(index_path(shard), allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"unreadable offsets table ({exc})"
    if table.dtype != INDEX_DTYPE or table.ndim != 1:
        return f"offsets table of dtype {table.dtype} and shape {table.shape}"
    size = shard.stat().st_size // 2
    if len(table) and int((table["offset"] + table["length"]).max()) > size:
        return f"truncated: the offsets table reaches past its {size} samples"
    return None


@functools.lru_cache(maxsize=_OPEN_SHARDS)
def _open_shard(shard: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(int16 samples [N] memory-mapped, offsets table [clips] of INDEX_DTYPE, sample rate) of one shard."""
    path = Path(shard)
    if not path.is_file():
        raise _error(path, "file not found")
    try:
        table = np.load(index_path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _error(path, f"unreadable offsets table {index_path(path).name} ({exc})") from None
    if table.dtype != INDEX_DTYPE or table.ndim != 1:
        raise _error(path, f"offsets table of dtype {table.dtype} and shape {table.shape}, expected [clips] of {INDEX_DTYPE}")
    rate = int(read_marker(path.parent.parent)["sample_rate"])
    size = path.stat().st_size // 2
    if len(table) and int((table["offset"] + table["length"]).max()) > size:
        raise _error(path, f"truncated: the offsets table reaches past its {size} samples")
    samples = np.memmap(path, dtype="<i2", mode="r") if size else np.zeros(0, dtype="<i2")
    return samples, table, rate


def _entry(ref: PackedRef) -> tuple[np.ndarray, int, float, int]:
    samples, table, rate = _open_shard(str(ref.shard))
    if ref.row >= len(table):
        raise _error(ref.shard, f"row {ref.row} is outside its {len(table)} clips")
    offset, length, scale = table[ref.row]
    return samples[int(offset):int(offset) + int(length)], int(length), float(scale), rate


def read_packed(ref: PackedRef) -> tuple[np.ndarray, int]:
    """(float32 mono waveform [T], sample rate) of a packed clip: int16 · scale / 32768."""
    pcm, _, scale, rate = _entry(ref)
    return pcm.astype(np.float32) * np.float32(scale / FULL_SCALE), rate


def packed_frames(ref: PackedRef) -> tuple[int, int]:
    """(frames, sample rate) of a packed clip, from the offsets table alone."""
    _, length, _, rate = _entry(ref)
    return length, rate


def encode_clip(wave: np.ndarray) -> tuple[bytes, float]:
    """int16 bytes of float waveform [T] and the scale that reads them back: 1 (then a 16-bit PCM source
    comes back bit for bit), or, when the peak would not fit in int16, peak · 32768 / 32767."""
    high, low = (float(wave.max()), float(wave.min())) if wave.size else (0.0, 0.0)
    fits = high * FULL_SCALE <= INT16_MAX and low * FULL_SCALE >= -FULL_SCALE
    scale = 1.0 if fits else float(np.float32(max(high, -low) * FULL_SCALE / INT16_MAX))
    pcm = np.clip(np.round(wave.astype(np.float64) * (FULL_SCALE / scale)), -FULL_SCALE, INT16_MAX).astype("<i2")
    return pcm.tobytes(), scale


class ShardWriter:
    """Appends clips to an open shard file, one at a time (memory: one clip), and keeps its offsets table."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.rows: list[tuple[int, int, float]] = []
        self.offset = 0

    def add(self, wave: np.ndarray) -> int:
        """Write waveform [T]; returns its row."""
        data, scale = encode_clip(wave)
        self.stream.write(data)
        length = len(data) // 2
        self.rows.append((self.offset, length, scale))
        self.offset += length
        return len(self.rows) - 1

    def table(self) -> np.ndarray:
        return np.array(self.rows, dtype=INDEX_DTYPE)


def clear_cache() -> None:
    """Forget open shard maps (after a shard was rewritten in this process)."""
    _open_shard.cache_clear()


__all__ = ["DTYPE", "FORMAT", "MARKER", "REPORT", "SHARD_SUFFIX", "VERSION", "PackedRef", "ShardWriter",
           "clear_cache", "encode_clip", "index_path", "meta_path", "packed_frames", "packed_ref", "read_marker",
           "read_packed", "shard_name", "virtual_path"]
