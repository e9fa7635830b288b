"""Vectors with their row labels written for other tools: Parquet (one table) or .npy plus a CSV sidecar.

Parquet (pyarrow): the label columns as given, then `vector`, a fixed-size list of float32 (Arrow readers
such as pandas, Polars and LanceDB get the fixed size back; DuckDB reads a list FLOAT[], for
`list_cosine_similarity`, or `vector::FLOAT[D]` for its array functions), and optional key-value metadata
in the schema ("hade" -> JSON). `.npy`: the vectors [N, D] float32 in FILE.npy, and the label columns in
FILE.csv beside it (header row, row i of the CSV labels row i of the array). Both writes are atomic.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hade.errors import InputError
from hade.utils.atomic import atomic_path

VECTOR_FORMATS = ("parquet", "npy")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}


def vector_format(out: str | Path, format: str | None = None) -> str:
    """The format to write `out` in: `format` when given, else from the suffix (.parquet/.pq or .npy)."""
    if format is not None:
        if format not in VECTOR_FORMATS:
            raise InputError(f"--format must be one of {', '.join(VECTOR_FORMATS)}, got {format!r}")
        return format
    suffix = Path(out).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"--out {out}: name a .parquet or .npy file (or give --format parquet|npy)")
    return _SUFFIXES[suffix]


def sidecar_path(out: str | Path) -> Path:
    """The CSV of row labels written beside an .npy file (FILE.npy -> FILE.csv)."""
    return Path(out).with_suffix(".csv")


def write_vectors(out: str | Path, vectors: np.ndarray, columns: Mapping[str, Sequence[Any]],
                  format: str | None = None, metadata: Mapping[str, Any] | None = None) -> list[Path]:
    """Write vectors [N, D] with label `columns` ({name: N values}, in order) to `out`; returns the files
    written (the .npy format also writes `sidecar_path(out)`)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"write_vectors: vectors must be [N, D], got shape {vectors.shape}")
    for name, values in columns.items():
        if len(values) != len(vectors):
            raise ValueError(f"write_vectors: column {name!r} has {len(values)} values for {len(vectors)} vectors")
    out = Path(out)
    if vector_format(out, format) == "parquet":
        _write_parquet(out, vectors, columns, metadata)
        return [out]
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)  # a file object: np.save would append ".npy" to the temporary's name
    side = sidecar_path(out)
    with atomic_path(side) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*[_plain(v) for v in columns.values()]))
    return [out, side]


def _plain(values: Sequence[Any]) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _write_parquet(out: Path, vectors: np.ndarray, columns: Mapping[str, Sequence[Any]],
                   metadata: Mapping[str, Any] | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(_plain(v)) if not isinstance(v, np.ndarray) else pa.array(v) for v in columns.values()]
    vector = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    table = pa.Table.from_arrays([*arrays, vector], names=[*columns, "vector"])
    if metadata:
        table = table.replace_schema_metadata({"hade": json.dumps(dict(metadata))})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
