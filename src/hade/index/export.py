"""Getting vectors out of an index (`Index.vectors`, `hade export`): the pooled window vectors the ANN
recalls with, with each window's file path and times, for a vector database of one's own.

The exported vector is the index's `pooled_key` (DP's `embed`, ...), widened from the index's storage
dtype (float16 by default) to float32; for a factorised head (DP) its dot product with
`model.embed_text(query)` is the score `hade search` ranks by, up to that float16 rounding. Heads without
a pooled vector (pure THA) have nothing to export: InputError.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hade.index.search import Index
from hade.index.vectors import IndexVectors  # noqa: F401 - re-exported
from hade.utils.vectorfile import write_vectors


def export_index(index: str | Path, out: str | Path, format: str | None = None) -> dict[str, Any]:
    """Write the index's window vectors with id, path, start and end to `out` (Parquet, or .npy with a CSV
    sidecar: `hade.utils.vectorfile`). Returns {"windows", "dim", "key", "files": [written paths]}."""
    with Index.open(index) as ix:
        vecs = ix.vectors()
        meta = {"head": ix.meta.head, "key": vecs.key, "fingerprint": ix.meta.fingerprint,
                "sample_rate": ix.meta.sample_rate, "storage_dtype": ix.meta.storage_dtype}
    written = write_vectors(out, vecs.vectors, {"id": vecs.ids, "path": vecs.paths, "start": vecs.start,
                                                "end": vecs.end}, format=format, metadata=meta)
    return {"windows": len(vecs), "dim": int(vecs.vectors.shape[1]), "key": vecs.key,
            "files": [str(p) for p in written]}
