"""`Store`, the one door to an index's storage: the files and windows tables on top of its parts (the
database and meta, `StoreDatabase`; integrity records, `StoreIntegrity`; chunks and codec sets,
`StoreChunks`), each layer using only those below it.

Storage behind one door: every SQL statement of the index is a `Store` method, and rows come back as named
records (`FileRecord`, `WindowRecord`, `IntegrityRecord`); no other module talks to SQLite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from hade.index.store.chunks import StoreChunks
from hade.index.store.records import (FILE_COLUMNS, WINDOW_COLUMNS, FileRecord, Placement, WindowRecord, db_path,
                                      file_record, path_of_db)


class Store(StoreChunks):
    """SQLite + chunk arrays of one index directory: every SQL statement of the index is a method of it (here
    or in its layers), and rows come back as named records. Not thread-safe; one writer at a time (see
    `write_lock`)."""

    def __init__(self, root: str | Path, create: bool = False) -> None:
        self._select_files: str | None = None
        super().__init__(root, create)

    # ---- files -----------------------------------------------------------------------------------
    def _file_select(self) -> str:
        """SELECT of every FileRecord column (NULL for a column an older index lacks) FROM files."""
        if self._select_files is None:
            cols = self.file_columns()
            self._select_files = ("SELECT " + ", ".join(c if c in cols else f"NULL AS {c}" for c in FILE_COLUMNS)
                                  + " FROM files")
        return self._select_files

    def files(self, status: str | None = None) -> list[FileRecord]:
        """Every indexed file (or those with `status` 'ok' / 'error'), in id order."""
        where, args = (" WHERE status=?", (status,)) if status is not None else ("", ())
        return [file_record(r) for r in self._conn.execute(self._file_select() + where + " ORDER BY id", args)]

    def file_record(self, path: str) -> FileRecord | None:
        """The file indexed at relative `path`, or None."""
        row = self._conn.execute(self._file_select() + " WHERE path=?", (db_path(path),)).fetchone()
        return file_record(row) if row is not None else None

    def same_content(self, sha256: str, other_than: str, aux_caption: str | None) -> FileRecord | None:
        """The first file (by id) other than `other_than` with these bytes whose stored windows a file with
        caption `aux_caption` can reuse: an unreadable one (same error), or one encoded with that caption."""
        row = self._conn.execute(self._file_select() + " WHERE sha256=? AND path!=? AND (status='error' OR "
                                 "aux_caption IS ?) ORDER BY id LIMIT 1",
                                 (sha256, db_path(other_than), aux_caption)).fetchone()
        return file_record(row) if row is not None else None

    def count_files(self, status: str | None = None) -> int:
        where, args = (" WHERE status=?", (status,)) if status is not None else ("", ())
        return int(self._conn.execute("SELECT COUNT(*) FROM files" + where, args).fetchone()[0])

    def add_file(self, record: FileRecord) -> int:
        """Insert a file (inside a transaction); its id is `record.id`, or a new one when None. Returns it."""
        marks = ",".join("?" * len(FILE_COLUMNS))
        return int(self._conn.execute(f"INSERT INTO files({', '.join(FILE_COLUMNS)}) VALUES({marks})",
                                      tuple(record._replace(path=db_path(record.path)))).lastrowid)

    def touch_file(self, path: str, size: int, mtime_ns: int) -> None:
        """New size and mtime for a file whose bytes did not change (inside a transaction)."""
        self._conn.execute("UPDATE files SET size=?, mtime_ns=? WHERE path=?", (size, mtime_ns, db_path(path)))

    def remove_files(self, paths: list[str]) -> None:
        """Delete the files at these relative paths and their windows (inside a transaction)."""
        rows = [(db_path(p),) for p in paths]
        self._conn.executemany("DELETE FROM windows WHERE file_id=(SELECT id FROM files WHERE path=?)", rows)
        self._conn.executemany("DELETE FROM files WHERE path=?", rows)

    def paths_in_chunks(self, chunk_ids: list[int]) -> list[str]:
        """Relative paths of the files with a window in any of these chunks."""
        marks = ",".join("?" * len(chunk_ids))
        return [path_of_db(r[0]) for r in self._conn.execute(
            f"SELECT path FROM files WHERE id IN (SELECT file_id FROM windows WHERE chunk IN ({marks})) "
            "ORDER BY id", list(chunk_ids))]

    # ---- windows ---------------------------------------------------------------------------------
    def file_windows(self, file_id: int) -> list[WindowRecord]:
        """The windows of one file, in id order."""
        return [WindowRecord(*r) for r in self._conn.execute(
            f"SELECT {', '.join(WINDOW_COLUMNS)} FROM windows WHERE file_id=? ORDER BY id", (file_id,))]

    def put_windows(self, windows: Iterable[WindowRecord]) -> None:
        """Insert windows (inside the transaction that registers their chunk)."""
        self._conn.executemany(f"INSERT INTO windows({', '.join(WINDOW_COLUMNS)}) VALUES(?,?,?,?,?,?,?,?)",
                               [tuple(w) for w in windows])

    def move_windows(self, placements: Iterable[Placement]) -> None:
        """Point windows at new rows (compaction; inside the transaction registering the new chunks)."""
        self._conn.executemany("UPDATE windows SET chunk=?, row=? WHERE id=?",
                               [(p.chunk, p.row, p.window_id) for p in placements])

    def count_windows(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0])

    # ---- windows as arrays -----------------------------------------------------------------------
    def window_table(self) -> dict[str, np.ndarray]:
        """All windows ordered by id: id, file_id, start, end, start_sample, end_sample, chunk, row ([N] each)."""
        rows = self._conn.execute("SELECT id, file_id, start, end, start_sample, end_sample, chunk, row "
                                  "FROM windows ORDER BY id").fetchall()
        names = ("id", "file_id", "start", "end", "start_sample", "end_sample", "chunk", "row")
        if not rows:
            return {n: np.zeros(0, np.float64 if n in ("start", "end") else np.int64) for n in names}
        cols = list(zip(*rows))
        return {n: np.asarray(col, np.float64 if n in ("start", "end") else np.int64) for n, col in zip(names, cols)}
