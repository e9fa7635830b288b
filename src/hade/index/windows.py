"""Which files and which windows: folder scan, shards, window grid, window batches, storage dtype."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from hade.data.audio import AUDIO_EXTENSIONS
from hade.errors import InputError

MAX_DEFAULT_WINDOW = 10.0


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'i/N' (0 <= i < N) -> (i, N)."""
    if shard is None or isinstance(shard, tuple):
        return shard
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/N (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {shard}: need 0 <= i < N")
    return i, n


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic slice of the files: first 8 bytes of sha256(relative path) modulo N."""
    if shard is None:
        return True
    key = rel.encode("utf-8", "surrogateescape")  # a name that is not UTF-8 hashes as its bytes
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % shard[1] == shard[0]


EXTERNAL_LINK_REASON = ("symbolic link to {what} outside the indexed folder; not indexed (pass "
                        "--follow-external-links to index it)")


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def scan_audio(folder: Path, exclude: Path | None = None,
               follow_external_links: bool = False) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """Audio files under `folder` (recursive, sorted, hidden names skipped) as (relative POSIX path, path),
    and the entries skipped because they are symbolic links resolving outside `folder` ([{path, reason}]).

    A symlinked file or folder resolving inside `folder` is not a risk: such a file is indexed under its
    link's name, such a folder is not descended (its files are indexed under their own path). One resolving
    outside is skipped unless `follow_external_links`; then folders are descended once each (no cycles)."""
    root = os.path.realpath(folder)
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    out: list[tuple[str, Path]] = []
    skipped: list[dict[str, str]] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=follow_external_links):
        base = Path(dirpath)
        real_dir = os.path.realpath(base)
        if real_dir in visited:  # a link cycle, or a second link to an already walked folder
            dirnames[:] = []
            continue
        visited.add(real_dir)
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(base / d)
            if d.startswith(".") or real == exclude_real:
                continue
            if (base / d).is_symlink():
                if not _inside(root, real) and not follow_external_links:
                    skipped.append({"path": (base / d).relative_to(folder).as_posix() + "/",
                                    "reason": EXTERNAL_LINK_REASON.format(what="a folder")})
                if _inside(root, real) or not follow_external_links:
                    continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            rel = (base / name).relative_to(folder).as_posix()
            if not follow_external_links and not _inside(root, os.path.realpath(base / name)):
                skipped.append({"path": rel, "reason": EXTERNAL_LINK_REASON.format(what="a file")})
                continue
            out.append((rel, base / name))
    out.sort(key=lambda item: item[0])
    return out, skipped


def scan_folder(folder: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """The files of `scan_audio` (external symlinks skipped)."""
    return scan_audio(folder, exclude)[0]


def window_bounds(num_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the windows of a file: starts 0, hop, 2·hop, ... while the window
    fits, plus one ending exactly at the end when the grid leaves a tail; one window [0, n) for a file no
    longer than `window` (zero-padded when encoded)."""
    if num_samples <= window:
        return [(0, num_samples)]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return [(s, s + window) for s in starts]


class StreamWindows:
    """The windows of `window_bounds` cut from a stream of sample blocks as they arrive (`hade index`
    decoding a long file block by block): `feed` returns the windows complete so far, `finish` the rest
    once the stream's length is known. Only the samples a window still needs are kept (at most about
    `window` plus one block), so memory does not grow with the stream's length."""

    def __init__(self, window: int, hop: int) -> None:
        self.window, self.hop = window, hop
        self.total = 0  # samples fed so far
        self.next_start = 0  # of the next window of the grid
        self.emitted: list[tuple[int, int]] = []
        self._buf = np.zeros(0, dtype=np.float32)  # samples [self._buf_start, self.total)
        self._buf_start = 0

    def _cut(self, start: int, end: int) -> np.ndarray:
        return self._buf[start - self._buf_start:end - self._buf_start].copy()

    def feed(self, block: np.ndarray) -> list[tuple[tuple[int, int], np.ndarray]]:
        """((start, end), samples) of the grid windows that `block` completes."""
        self._buf = np.concatenate([self._buf, np.asarray(block, dtype=np.float32)])
        self.total += len(block)
        out = []
        while self.next_start + self.window <= self.total:
            bounds = (self.next_start, self.next_start + self.window)
            out.append((bounds, self._cut(*bounds)))
            self.next_start += self.hop
        keep_from = max(self._buf_start, min(self.next_start, self.total - self.window))
        self._buf, self._buf_start = self._buf[keep_from - self._buf_start:], keep_from
        self.emitted += [b for b, _ in out]
        return out

    def finish(self) -> list[tuple[tuple[int, int], np.ndarray]]:
        """The last windows: the one ending exactly at the end when the grid leaves a tail, or the whole
        stream as one window when it is not longer than `window`. Afterwards `emitted` equals
        `window_bounds(total, window, hop)`."""
        if not self.emitted:  # shorter than a window
            out = [((0, self.total), self._cut(0, self.total))]
        elif self.emitted[-1][1] < self.total:
            out = [((self.total - self.window, self.total), self._cut(self.total - self.window, self.total))]
        else:
            out = []
        self.emitted += [b for b, _ in out]
        return out


def resolve_window(model_sample_rate: int, max_samples: int, window: float | None,
                   hop: float | None, clip_samples: int | None = None) -> tuple[int, int]:
    """Window and hop in samples: window defaults to the model's clip length (`clip_samples`, the length it
    was trained on, else `max_samples`) capped to 10 s; hop to half the window."""
    if window is None:
        w = min(clip_samples or max_samples, max_samples, int(round(MAX_DEFAULT_WINDOW * model_sample_rate)))
    else:
        w = int(round(float(window) * model_sample_rate))
        if w > max_samples:
            raise InputError(f"--window {window} s is longer than the model's clip length "
                             f"{max_samples / model_sample_rate:.3f} s; use a shorter window")
        if w <= 0:
            raise InputError(f"--window must be positive, got {window}")
    h = max(1, w // 2) if hop is None else int(round(float(hop) * model_sample_rate))
    if h <= 0:
        raise InputError(f"--hop must be positive, got {hop}")
    return w, h


def window_batch(pieces: Sequence[np.ndarray], window: int) -> np.ndarray:
    """The encoder's input for waveform pieces of at most `window` samples each: [B, window] float32, each
    piece at the start of its row and zero-padded (a file shorter than a window)."""
    batch = np.zeros((len(pieces), window), dtype=np.float32)
    for i, piece in enumerate(pieces):
        batch[i, :len(piece)] = piece
    return batch


def window_batches(wave: np.ndarray, bounds: Sequence[tuple[int, int]], window: int,
                   batch_size: int) -> Iterator[np.ndarray]:
    """`window_batch`es [<=batch_size, window] of the windows `bounds` of one waveform, in order."""
    for a in range(0, len(bounds), batch_size):
        yield window_batch([wave[s:e] for s, e in bounds[a:a + batch_size]], window)


def to_numpy(reprs: dict[str, torch.Tensor], storage_dtype: str) -> dict[str, np.ndarray]:
    """Encoder output -> arrays to store; floating tensors become `storage_dtype` ('float16' or 'float32'),
    others are kept as they are."""
    out = {}
    for key, t in reprs.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            arr = t.to(torch.float16 if storage_dtype == "float16" else torch.float32).numpy()
            if not np.isfinite(arr).all():
                raise InputError(f"representation {key!r} overflows {storage_dtype}; index with "
                                 "--storage-dtype float32")
        else:
            arr = t.numpy()
        out[key] = arr
    return out
