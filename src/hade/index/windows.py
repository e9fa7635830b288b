"""Which files and which windows: folder scan, shards, window grid, storage precision."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") % shard[1] == shard[0]


def scan_folder(folder: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """Audio files under `folder` (recursive, sorted, hidden names skipped) as (relative POSIX path, path)."""
    out = []
    exclude = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (exclude is None or (base / d).resolve() != exclude))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                out.append(((base / name).relative_to(folder).as_posix(), base / name))
    out.sort(key=lambda item: item[0])
    return out


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


def to_numpy(reprs: dict[str, torch.Tensor], precision: str) -> dict[str, np.ndarray]:
    """Encoder output -> arrays; floating tensors become float16 (or float32 with precision='float32')."""
    out = {}
    for key, t in reprs.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            arr = t.to(torch.float16 if precision == "float16" else torch.float32).numpy()
            if not np.isfinite(arr).all():
                raise InputError(f"representation {key!r} overflows {precision}; index with --precision float32")
        else:
            arr = t.numpy()
        out[key] = arr
    return out
