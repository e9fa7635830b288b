"""Window representations read back from an index's chunk arrays, addressed by window position.

A chunk written with a token codec set stores its token keys as codes (``{key}.codes``, see
`hade.index.tokens`); `ReprTable.gather` decodes the rows it is asked for, so callers always get float
arrays, and `gather_stored` hands out the stored arrays (codes included) for copying without a second
quantisation (compaction, merge).
"""
from __future__ import annotations

import os
from typing import Any, Collection

import numpy as np

from hade.errors import IndexDamaged, InputError
from hade.index.store import CODES_SUFFIX, Store
from hade.index.tokens import TokenCodec, load_codecs


def rows_within(spec: dict[str, dict[str, Any]], budget: int, cap: int, keys: list[str] | None = None,
                itemsize: int | None = None) -> int:
    """How many windows' arrays of `keys` (all: None) fit in `budget` bytes, between 1 and `cap`; a value
    takes `itemsize` bytes (default: its key's stored dtype)."""
    per_window = sum(int(np.prod(v["shape"], dtype=np.int64)) * (itemsize or np.dtype(v["dtype"]).itemsize)
                     for k, v in spec.items() if keys is None or k in keys)
    return max(1, min(cap, budget // max(1, per_window)))


def load_codec_set(store: Store, codec_id: str) -> dict[str, TokenCodec]:
    """Codec set `codec_id` of the index ({key: codec}), its files verified against their checksums first
    (`Store.verify_read`); IndexDamaged naming the file and the repair command when one is damaged or
    unreadable."""
    rels = store.codec_files(codec_id)
    for rel in rels:
        store.verify_read(rel)
    try:
        return load_codecs(store.codec_dir(codec_id))
    except InputError as e:  # unrecorded files (an index written before checksums) that faiss cannot read
        rel = f"{store.codec_dir(codec_id).relative_to(store.root).as_posix()}/"
        raise IndexDamaged(f"{e}; repair with `{store.repair}`", file=rel, repair=store.repair) from None


class ReprTable:
    """Window representations addressed by position p (0..N-1, windows in id order).

    `chunk[p]`, `row[p]` say where window p's rows live; chunks are memory-mapped on first use, and with
    `random_access` (a search's candidates) their rows are read with pread; codec sets load on first use.
    """

    def __init__(self, store: Store, chunk: np.ndarray, row: np.ndarray, spec: dict[str, dict[str, Any]],
                 random_access: bool = False) -> None:
        self.store, self.chunk, self.row, self.spec = store, chunk, row, spec
        self.random_access = random_access
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self.chunk_codec = store.chunk_codecs()
        self._codecs: dict[str, dict[str, TokenCodec]] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._fds: dict[str, int] = {}

    def __len__(self) -> int:
        return int(self.chunk.shape[0])

    def _array(self, chunk_id: int, name: str) -> np.ndarray:
        if (chunk_id, name) not in self._maps:
            self._maps[(chunk_id, name)] = self.store.load_array(int(chunk_id), name)
        return self._maps[(chunk_id, name)]

    def _rows(self, chunk_id: int, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (ascending) of a stored array. With `random_access` they are read with pread, not
        through the memory map: a mapped page stays in the process's resident memory once touched (and the
        kernel maps its neighbours with it), so a server's RSS would grow towards the size of the index;
        read pages live only in the page cache."""
        arr = self._array(chunk_id, name)
        if not (self.random_access and isinstance(arr, np.memmap) and arr.flags.c_contiguous and arr.ndim):
            return np.asarray(arr[rows])
        if arr.filename not in self._fds:
            self._fds[arr.filename] = os.open(arr.filename, os.O_RDONLY)
        fd, row_bytes = self._fds[arr.filename], arr.strides[0]
        out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        for i, r in enumerate(rows.tolist()):
            if os.preadv(fd, [buf[i * row_bytes:(i + 1) * row_bytes]], arr.offset + r * row_bytes) != row_bytes:
                raise IndexDamaged(f"{arr.filename}: shorter than its header says; repair with `{self.store.repair}`",
                                   file=str(arr.filename), repair=self.store.repair)
        return out

    def close(self) -> None:
        """Close the files opened for random-access reads."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def codecs(self, codec_id: str) -> dict[str, TokenCodec]:
        """The codec set `codec_id` of this index ({key: codec})."""
        if codec_id not in self._codecs:
            self._codecs[codec_id] = load_codec_set(self.store, codec_id)
        return self._codecs[codec_id]

    def _codec(self, chunk_id: int, key: str) -> TokenCodec | None:
        codec_id = self.chunk_codec.get(int(chunk_id))
        return None if codec_id is None else self.codecs(codec_id).get(key)

    def codec_of(self, positions: np.ndarray) -> list[str | None]:
        """The codec set id of each position's chunk (None: float arrays)."""
        return [self.chunk_codec.get(int(c)) for c in self.chunk[np.asarray(positions, dtype=np.int64)]]

    def _runs(self, positions: np.ndarray):
        """(chunk id, indices into positions, their rows) per chunk, rows ascending (each chunk read front
        to back)."""
        chunks, rows = self.chunk[positions], self.row[positions]
        for cid in np.unique(chunks):
            sel = np.nonzero(chunks == cid)[0]
            sel = sel[np.argsort(rows[sel], kind="stable")]
            yield int(cid), sel, rows[sel]

    def _dtype(self, key: str) -> np.dtype:
        """A gathered key's dtype: the stored one, float32 for a key some chunk keeps as codes (decoding
        gives float32, and numpy's float32 -> float16 cast took half of a re-rank's gather)."""
        if key not in self._dtypes:
            coded = any(c is not None and key in self.codecs(c) for c in set(self.chunk_codec.values()))
            self._dtypes[key] = np.dtype(np.float32) if coded else np.dtype(self.spec[key]["dtype"])
        return self._dtypes[key]

    def gather(self, positions: np.ndarray, keys: list[str] | None = None,
               rotated: Collection[str] = ()) -> dict[str, np.ndarray]:
        """positions [P] -> {key: [P, ...]} in the stored dtype, float32 for token keys stored as codes
        (copies, in the order given; codes decoded). Keys in `rotated` whose codec has a rotation come
        back rotated (`TokenCodec.decode(rotated=True)`): only for positions of one codec set
        (`rotations`), whose rotation the caller applies to the other side."""
        positions = np.asarray(positions, dtype=np.int64)
        keys = list(self.spec) if keys is None else keys
        out = {k: np.empty((len(positions), *self.spec[k]["shape"]), dtype=self._dtype(k)) for k in keys}
        for cid, sel, rows in self._runs(positions):
            for k in keys:
                codec = self._codec(cid, k)
                if codec is None:
                    out[k][sel] = self._rows(cid, k, rows)
                else:
                    out[k][sel] = codec.decode(self._rows(cid, k + CODES_SUFFIX, rows), rotated=k in rotated)
        return out

    def rotations(self, codec_id: str | None, keys: Collection[str]) -> dict[str, np.ndarray]:
        """{key: R [D, D]} for the keys of `keys` that codec set `codec_id` codes with a rotation."""
        if codec_id is None:
            return {}
        codecs = self.codecs(codec_id)
        return {k: codecs[k].rotation for k in keys if k in codecs and codecs[k].rotation is not None}

    def gather_stored(self, positions: np.ndarray) -> tuple[dict[str, np.ndarray], str | None]:
        """positions [P] of chunks of one codec set -> ({array name: [P, ...]} as stored, e.g. "embed" and
        "tha_audio_0.codes"; the codec set id or None). ValueError when the chunks use different sets."""
        positions = np.asarray(positions, dtype=np.int64)
        used = set(self.codec_of(positions))
        if len(used) > 1:
            raise ValueError(f"gather_stored: positions span codec sets {sorted(map(str, used))}")
        codec_id = used.pop() if used else None
        names = {k: k + CODES_SUFFIX if codec_id is not None and k in self.codecs(codec_id) else k for k in self.spec}
        out: dict[str, np.ndarray] = {}
        for cid, sel, rows in self._runs(positions):
            for name in names.values():
                arr = self._array(cid, name)
                if name not in out:
                    out[name] = np.empty((len(positions), *arr.shape[1:]), dtype=arr.dtype)
                out[name][sel] = arr[rows]
        if not len(positions):
            out = {name: np.empty((0,), dtype=np.float32) for name in names.values()}
        return out, codec_id
