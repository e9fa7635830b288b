"""The index's own share of "which files and which windows": shards and the storage dtype. The window grid
and batches (`hade.data.windows`, shared with `RetrievalModel.embed_audio` and zero-shot classification) and
the folder scan (`hade.data.scan`, shared with `hade classify` and `hade embed`) live in hade.data and are
re-exported here for the index modules."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from hade.data.scan import EXTERNAL_LINK_REASON, scan_audio, scan_folder  # noqa: F401
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
