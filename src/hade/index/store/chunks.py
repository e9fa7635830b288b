"""The chunks of stored representations and the token codec sets they are written with: their folders
(`arrays/cNNNNNN/`, `codecs/<id>/`), their rows in the chunks table, reading an array back verified,
and cleaning up what no window uses (`StoreChunks`, a part of `hade.index.store.Store`).

Consistency under a kill: a chunk directory is written under a temporary name and renamed into place
(`atomic_dir`), *then* registered in SQLite in the same transaction as the windows that point into it.
A chunk directory that no transaction registered is an orphan and is deleted by the next build. Every
committed change increments the ``generation`` meta value; the ANN is current only when ``ann.json``
records the same generation.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tokenize
from pathlib import Path
from typing import Callable

import numpy as np

from hade.errors import IndexDamaged
from hade.index.store.integrity_rows import StoreIntegrity
from hade.index.store.layout import ARRAYS_DIR, CHUNK_DIR_RE, CODECS_DIR, chunk_name, sha256_file
from hade.utils.atomic import atomic_dir


class StoreChunks(StoreIntegrity):
    """Chunk folders and codec sets, registered in the same transactions as the windows that use them."""

    def _dir_chunk_ids(self) -> list[int]:
        if not self.arrays_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.arrays_dir.iterdir() if (m := CHUNK_DIR_RE.match(p.name)))

    def chunk_ids(self) -> list[int]:
        """Ids of the registered chunks, ascending."""
        return [r[0] for r in self._conn.execute("SELECT id FROM chunks ORDER BY id")]

    def chunk_totals(self) -> tuple[int, int]:
        """(rows over all registered chunks, live or dead; number of chunks)."""
        rows, count = self._conn.execute("SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM chunks").fetchone()
        return int(rows), int(count)

    def write_chunk(self, arrays: dict[str, np.ndarray]) -> int:
        """Write the arrays (same first dimension) as a new chunk directory, atomically; returns its id.

        The chunk is not part of the index until `register_chunk` is committed with windows using it."""
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"write_chunk: arrays differ in rows: {rows}")
        last = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        chunk_id = max([last, *self._dir_chunk_ids()]) + 1
        self.arrays_dir.mkdir(parents=True, exist_ok=True)
        with atomic_dir(self.chunk_dir(chunk_id)) as tmp:
            for key, arr in arrays.items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        return chunk_id

    def register_chunk(self, chunk_id: int, rows: int, codec: str | None = None) -> None:
        """Register a written chunk (inside the transaction that adds its windows), with the codec set its
        token keys were encoded with (None: float arrays), and record its files' sizes and checksums, so
        that later damage to them is detected."""
        self._conn.execute("INSERT INTO chunks(id, rows, codec) VALUES(?, ?, ?)", (chunk_id, rows, codec))
        folder = self.chunk_dir(chunk_id)
        self.record_files(sorted(f"{ARRAYS_DIR}/{folder.name}/{p.name}" for p in folder.glob("*.npy")))

    def chunk_codecs(self) -> dict[int, str | None]:
        """{chunk id: the codec set its token keys were written with, None for float arrays}."""
        if not self._has_chunk_codecs():
            return {cid: None for cid in self.chunk_ids()}
        return {int(r[0]): r[1] for r in self._conn.execute("SELECT id, codec FROM chunks ORDER BY id")}

    # ---- token codec sets --------------------------------------------------------------------------
    def write_codec_set(self, write: Callable[[Path], None]) -> str:
        """`write(folder)` fills a new folder with a codec set; it is kept under codecs/<id>, id = the first
        16 hex of the sha256 of its files (names and bytes), and its files recorded. Returns the id (a set
        with the same files already there is kept as it is). Commit with the chunks that use it."""
        self.codecs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.codecs_dir / f".new-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            write(tmp)
            h = hashlib.sha256()
            for f in sorted(tmp.iterdir()):
                h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\0")
            codec_id = h.hexdigest()[:16]
            if not self.codec_dir(codec_id).is_dir():
                os.replace(tmp, self.codec_dir(codec_id))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.record_codec_set(codec_id)
        return codec_id

    def copy_codec_set(self, other: "StoreChunks", codec_id: str) -> None:
        """Copy codec set `codec_id` of another index into this one (merge), unless it is here already."""
        if not self.codec_dir(codec_id).is_dir():
            self.codecs_dir.mkdir(parents=True, exist_ok=True)
            with atomic_dir(self.codec_dir(codec_id)) as tmp:
                for f in other.codec_dir(codec_id).iterdir():
                    shutil.copy2(f, tmp / f.name)
        self.record_codec_set(codec_id)

    def record_codec_set(self, codec_id: str) -> None:
        """Record (size, sha256) the files of codec set `codec_id`, in their own transaction."""
        folder = self.codec_dir(codec_id)
        with self.transaction():
            self.record_files(sorted(f"{CODECS_DIR}/{codec_id}/{p.name}" for p in folder.iterdir()))

    def codec_files(self, codec_id: str) -> list[str]:
        """Relative paths of the files recorded for codec set `codec_id`."""
        prefix = f"{CODECS_DIR}/{codec_id}/"
        return [r[0] for r in self._conn.execute(
            "SELECT path FROM integrity WHERE substr(path, 1, ?) = ? ORDER BY path", (len(prefix), prefix))]

    def drop_codec_set(self, codec_id: str) -> None:
        """Forget and delete a codec set no chunk uses (inside no transaction)."""
        with self.transaction():
            self.forget_files(f"{CODECS_DIR}/{codec_id}/")
        shutil.rmtree(self.codec_dir(codec_id), ignore_errors=True)

    def forget_chunks(self, chunk_ids: list[int]) -> None:
        """Unregister chunks and drop their files' integrity records (inside a transaction; their folders
        are the caller's to delete after the commit)."""
        self._conn.executemany("DELETE FROM chunks WHERE id=?", [(i,) for i in chunk_ids])
        for cid in chunk_ids:
            self.forget_files(f"{ARRAYS_DIR}/{chunk_name(cid)}/")

    def load_array(self, chunk_id: int, key: str, mmap: bool = True) -> np.ndarray:
        """One stored array, memory-mapped, its bytes verified first (`verify_read`); IndexDamaged (naming
        the file and the repair command in `self.repair`) when it is missing, damaged or not an array file."""
        file = self.chunk_dir(chunk_id) / f"{key}.npy"
        rel = file.relative_to(self.root).as_posix()
        self.verify_read(rel)
        try:
            return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            what = "missing"
        except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as e:  # a garbled header
            what = f"damaged ({' '.join(str(e).split())[:120]})"
        raise IndexDamaged(f"{self.root / rel} is {what}; repair with `{self.repair}`", file=rel, repair=self.repair)

    def cleanup(self, keep_codec: str | None = None) -> dict[str, int]:
        """Delete orphan chunk directories (never committed), chunks no window points to, temporaries, and
        codec sets no chunk uses but `keep_codec` (the one new chunks are written with,
        `TokenCompression.current_of`)."""
        used = {r[0] for r in self._conn.execute("SELECT DISTINCT chunk FROM windows")}
        known = set(self.chunk_ids())
        unused = sorted(known - used)
        if unused:
            with self.transaction():
                self.forget_chunks(unused)
        orphans = [cid for cid in self._dir_chunk_ids() if cid not in known]
        for cid in unused + orphans:
            shutil.rmtree(self.chunk_dir(cid), ignore_errors=True)
        for folder in (self.arrays_dir, self.codecs_dir):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.startswith("."):
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        codecs = self._unused_codec_sets(keep_codec)
        for codec_id in codecs:
            self.drop_codec_set(codec_id)
        return {"orphan_chunks": len(orphans), "unused_chunks": len(unused), "unused_codec_sets": len(codecs)}

    def _unused_codec_sets(self, keep_codec: str | None) -> list[str]:
        """Codec set folders no chunk uses but `keep_codec` (a killed first write)."""
        if not self.codecs_dir.is_dir():
            return []
        used = set(self.chunk_codecs().values()) | {keep_codec}
        return sorted(p.name for p in self.codecs_dir.iterdir() if not p.name.startswith(".") and p.name not in used)
