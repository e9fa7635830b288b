"""The integrity table: what every file of the index weighed and hashed when it was written
(`StoreIntegrity`, a part of `hade.index.store.Store`).

Integrity: every chunk array, codec file, the ANN file and the model copy's files have a row in
``integrity`` (size, mtime, sha256, XXH3-128) written in the transaction that makes them part of the index
(`register_chunk`, `record_files`); a reading process verifies each file against it the first time it
reads it (`verify_read`, `hade.index.checksums`), `hade.index.integrity` checks them and
`hade.index.repair` repairs what fails.
"""
from __future__ import annotations

import sqlite3
import threading

from hade.errors import IndexDamaged
from hade.index import checksums
from hade.index.checksums import file_digests
from hade.index.store.database import StoreDatabase
from hade.index.store.layout import MODEL_DIR
from hade.index.store.records import IntegrityRecord


class StoreIntegrity(StoreDatabase):
    """Integrity records of the index files: written with the files, read to verify and check them."""

    def integrity_records(self) -> dict[str, IntegrityRecord]:
        """{path relative to the index folder: its record} ({} for indexes that predate the table)."""
        try:
            rows = self._conn.execute(f"SELECT path, {self._integrity_columns()} FROM integrity").fetchall()
        except sqlite3.OperationalError:
            return {}
        return {r[0]: IntegrityRecord(int(r[1]), *r[2:]) for r in rows}

    def _integrity_columns(self) -> str:
        return "size, mtime_ns, sha256, " + ("xxh3" if self._has_fast_checksums() else "NULL")

    def integrity_record(self, rel: str) -> IntegrityRecord | None:
        """The record of one index file (None: not recorded, or an index that predates the table)."""
        try:
            row = self._conn.execute(f"SELECT {self._integrity_columns()} FROM integrity WHERE path=?",
                                     (rel,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return IntegrityRecord(int(row[0]), *row[1:]) if row is not None else None

    def record_files(self, rels: list[str]) -> None:
        """Upsert size, mtime, sha256 and XXH3-128 of index files (paths relative to the index folder) into
        the integrity table (call inside `transaction` when the files become part of the index)."""
        rows = []
        for rel in rels:
            st = (self.root / rel).stat()
            rows.append((rel, st.st_size, st.st_mtime_ns, *file_digests(self.root / rel)))
        self._conn.executemany("INSERT INTO integrity(path, size, mtime_ns, sha256, xxh3) VALUES(?,?,?,?,?) "
                               "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                               "sha256=excluded.sha256, xxh3=excluded.xxh3", rows)

    def verify_later(self, rels: list[str], stop: threading.Event) -> threading.Thread:
        """Start verifying index files `rels` in a background thread (`checksums.verify_in_background`;
        their records are read here, on the caller's thread: the connection is not shared)."""
        recs = self.integrity_records()
        files = [(self.root / rel, checksums.Expected(r.size, r.sha256, r.xxh3)) for rel in rels
                 if (r := recs.get(rel)) is not None]
        return checksums.verify_in_background(files, stop)

    def verify_read(self, rel: str) -> None:
        """Before this process first reads index file `rel`: its bytes against the checksum recorded when
        it was written (once per process and file state, `hade.index.checksums.verify`). IndexDamaged
        naming the file and the repair command on a mismatch; nothing for a file without a record (an
        index written before checksums: size-checked when opened)."""
        rec = self.integrity_record(rel)
        if rec is None:
            return
        problem = checksums.verify(self.root / rel, checksums.Expected(rec.size, rec.sha256, rec.xxh3))
        if problem is not None:
            raise IndexDamaged(f"{self.root / rel} is {problem}; repair with `{self.repair}`", file=rel,
                               repair=self.repair)

    def forget_files(self, prefix: str) -> None:
        """Drop the integrity records of files whose relative path starts with `prefix`."""
        self._conn.execute("DELETE FROM integrity WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))

    def record_model(self) -> None:
        """Record the model copy's files (config, weights, tokenizer) in their own transaction."""
        rels = sorted(p.relative_to(self.root).as_posix() for p in self.model_dir.rglob("*") if p.is_file())
        with self.transaction():
            self.forget_files(MODEL_DIR + "/")
            self.record_files(rels)
