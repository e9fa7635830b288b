"""Window representations read back from an index's chunk arrays, addressed by window position."""
from __future__ import annotations

from typing import Any

import numpy as np

from hade.index.store import Store


class ReprTable:
    """Window representations addressed by position p (0..N-1, windows in id order).

    `chunk[p]`, `row[p]` say where window p's rows live; chunks are memory-mapped on first use.
    """

    def __init__(self, store: Store, chunk: np.ndarray, row: np.ndarray, spec: dict[str, dict[str, Any]]) -> None:
        self.store, self.chunk, self.row, self.spec = store, chunk, row, spec
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.chunk.shape[0])

    def _array(self, chunk_id: int, key: str) -> np.ndarray:
        if (chunk_id, key) not in self._maps:
            self._maps[(chunk_id, key)] = self.store.load_array(int(chunk_id), key)
        return self._maps[(chunk_id, key)]

    def gather(self, positions: np.ndarray, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """positions [P] -> {key: [P, ...]} in the stored dtype (copies, in the order given)."""
        positions = np.asarray(positions, dtype=np.int64)
        keys = list(self.spec) if keys is None else keys
        out = {k: np.empty((len(positions), *self.spec[k]["shape"]), dtype=self.spec[k]["dtype"]) for k in keys}
        if len(positions) == 0:
            return out
        chunks = self.chunk[positions]
        rows = self.row[positions]
        for cid in np.unique(chunks):
            sel = np.nonzero(chunks == cid)[0]
            order = np.argsort(rows[sel], kind="stable")  # read each chunk front to back
            sel = sel[order]
            for k in keys:
                out[k][sel] = self._array(int(cid), k)[rows[sel]]
        return out
