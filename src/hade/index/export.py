"""Getting vectors out of an index (`Index.vectors`, `hade export`): the pooled window vectors the ANN
recalls with, with each window's file path and times, for a vector database of one's own.

The exported vector is the index's `pooled_key` (DP's `embed`, ...), widened from the index's storage
dtype (float16 by default) to float32; for a factorised head (DP) its dot product with
`model.embed_text(query)` is the score `hade search` ranks by, up to that float16 rounding. Heads without
a pooled vector (pure THA) have nothing to export: InputError.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hade.errors import InputError
from hade.index.store import STORAGE_DTYPE_KEY
from hade.utils.vectorfile import write_vectors

if TYPE_CHECKING:
    from hade.index.search import Index

GATHER_ROWS = 65536  # windows read at a time (bounds the stored-dtype copy next to the float32 result)


@dataclass(frozen=True)
class IndexVectors:
    """The pooled vectors of an index's windows, one row per window in window-id order.

    ids [N] int64 window ids (as in `Hit.id`); paths: N file paths relative to the indexed folder;
    start, end [N] float64 seconds; vectors [N, D] float32; key: the stored key they come from."""

    ids: np.ndarray
    paths: list[str]
    start: np.ndarray
    end: np.ndarray
    vectors: np.ndarray
    key: str

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def index_vectors(index: "Index") -> IndexVectors:
    """The `IndexVectors` of an open index (see `Index.vectors`)."""
    key = index.pooled_key
    if key is None:
        from hade.models.heads import pooled_heads

        raise InputError(f"{index.path}: head {index.meta['head']!r} stores no pooled window vectors (it ranks "
                         f"with token features only); export an index built with a head that has them: "
                         f"{', '.join(pooled_heads())}")
    n = len(index)
    dim = int(np.prod(index.reprs.spec[key]["shape"]))
    vectors = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, GATHER_ROWS):
        part = np.arange(a, min(n, a + GATHER_ROWS))
        vectors[a:a + len(part)] = index.reprs.gather(part, keys=[key])[key].reshape(len(part), dim)
    table = index.table
    paths = [index.paths[int(f)] for f in table["file_id"]]
    return IndexVectors(np.asarray(table["id"], dtype=np.int64), paths, np.asarray(table["start"], dtype=np.float64),
                        np.asarray(table["end"], dtype=np.float64), vectors, key)


def export_index(index: str | Path, out: str | Path, format: str | None = None) -> dict[str, Any]:
    """Write the index's window vectors with id, path, start and end to `out` (Parquet, or .npy with a CSV
    sidecar: `hade.utils.vectorfile`). Returns {"windows", "dim", "key", "files": [written paths]}."""
    from hade.index.search import Index

    with Index.open(index) as ix:
        vecs = ix.vectors()
        meta = {"head": ix.meta["head"], "key": vecs.key, "fingerprint": ix.meta["fingerprint"],
                "sample_rate": ix.meta["sample_rate"], "storage_dtype": ix.meta[STORAGE_DTYPE_KEY]}
    written = write_vectors(out, vecs.vectors, {"id": vecs.ids, "path": vecs.paths, "start": vecs.start,
                                                "end": vecs.end}, format=format, metadata=meta)
    return {"windows": len(vecs), "dim": int(vecs.vectors.shape[1]), "key": vecs.key,
            "files": [str(p) for p in written]}
