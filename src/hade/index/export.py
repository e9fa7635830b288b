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
from typing import Any

from hade.index.search import Index
from hade.index.vectors import IndexVectors  # noqa: F401 - re-exported
from hade.utils.vectorfile import write_vectors


@dataclass(frozen=True)
class ExportReport:
    """What `export_index` wrote: `windows` vectors of `dim` floats (the stored `key`) into `files`."""

    windows: int
    dim: int
    key: str
    files: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`hade export --json`)."""
        return {"windows": self.windows, "dim": self.dim, "key": self.key, "files": [str(p) for p in self.files]}


def export_index(index: str | Path, out: str | Path, format: str | None = None) -> ExportReport:
    """Write the index's window vectors with id, path, start and end to `out` (Parquet, or .npy with a CSV
    sidecar: `hade.utils.vectorfile`)."""
    with Index.open(index) as ix:
        vecs = ix.vectors()
        meta = {"head": ix.meta.head, "key": vecs.key, "fingerprint": ix.meta.fingerprint,
                "sample_rate": ix.meta.sample_rate, "storage_dtype": ix.meta.storage_dtype}
    written = write_vectors(out, vecs.vectors, {"id": vecs.ids, "path": vecs.paths, "start": vecs.start,
                                                "end": vecs.end}, format=format, metadata=meta)
    return ExportReport(len(vecs), int(vecs.vectors.shape[1]), vecs.key, tuple(Path(p) for p in written))
