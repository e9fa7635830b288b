"""An index's pooled window vectors as a typed record (`IndexVectors`, `Index.vectors`); written out by
`hade.index.export`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hade.index.reprs import ReprTable

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


def gather_vectors(reprs: ReprTable, table: dict[str, np.ndarray], paths: dict[int, str], key: str) -> IndexVectors:
    """The `IndexVectors` of stored key `key` of every window of `table` (a `Store.window_table`, whose
    rows `reprs` reads; paths: {file id: path}), gathered GATHER_ROWS windows at a time (see `Index.vectors`)."""
    n = len(table["id"])
    dim = int(np.prod(reprs.spec[key]["shape"]))
    vectors = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, GATHER_ROWS):
        part = np.arange(a, min(n, a + GATHER_ROWS))
        vectors[a:a + len(part)] = reprs.gather(part, keys=[key])[key].reshape(len(part), dim)
    return IndexVectors(np.asarray(table["id"], dtype=np.int64), [paths[int(f)] for f in table["file_id"]],
                        np.asarray(table["start"], dtype=np.float64), np.asarray(table["end"], dtype=np.float64),
                        vectors, key)
