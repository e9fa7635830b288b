"""Which files and which windows: folder scan, shards, storage dtype; the window grid and batches live in
`hade.data.windows` (shared with `RetrievalModel.embed_audio`) and are re-exported here."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from hade.data.audio import AUDIO_EXTENSIONS
from hade.data.windows import (MAX_DEFAULT_WINDOW, StreamWindows, resolve_window, window_batch,  # noqa: F401
                                window_batches, window_bounds)
from hade.errors import InputError


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
