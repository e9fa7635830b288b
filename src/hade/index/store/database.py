"""The index database, opened: the connection, its schema and migrations, transactions and the meta table
(`StoreDatabase`, the lowest part of `hade.index.store.Store`), and the two readers of a database file that
may be too damaged to open (`quick_check`, `salvage_meta`).

Meta keys: schema, fingerprint (sha256 of model.safetensors + config.json), head, root (the indexed
folder), shard ([i, N] or null), sample_rate, window_samples, hop_samples, precision (the storage
dtype, float16 or float32; the key keeps its old name so that older indexes read), repr_spec
({key: {shape, dtype}}), pooled_key (the stored key the ANN indexes; null for heads without a pooled
embedding, e.g. pure THA, which are searched exhaustively), ann_threshold, generation,
follow_external_links (whether files resolving outside the folder were indexed and may be served),
token_codec ({factory, keys, current}: the faiss factory of the token codec, "none" for float tokens;
the repr keys it compresses; the codec set new chunks are written with — absent in indexes written
before token codecs, which read as float tokens throughout). Read and written only here, as the typed
record `hade.index.meta.IndexMeta` (`meta`, `write_meta`, `update_meta`); older indexes upgrade through
`IndexMeta.from_dict`.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from hade.errors import InputError
from hade.index.meta import SCHEMA_VERSION, IndexMeta
from hade.index.store.layout import ARRAYS_DIR, CODECS_DIR, DB_FILE, MODEL_DIR, chunk_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,          -- POSIX path relative to the indexed folder
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,                        -- of the file's bytes
    status TEXT NOT NULL,               -- 'ok' or 'error'
    error TEXT,                         -- why an 'error' file was skipped
    duration REAL,                      -- seconds (at the model's rate)
    num_windows INTEGER NOT NULL DEFAULT 0,
    aux_caption TEXT                    -- the auxiliary caption its windows were encoded with (HCI+AC), or NULL
);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, rows INTEGER NOT NULL,
                                   codec TEXT);  -- the codec set of its token keys, NULL: float
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id),
    start REAL NOT NULL, end REAL NOT NULL,              -- seconds in the file
    start_sample INTEGER NOT NULL, end_sample INTEGER NOT NULL,  -- at the model's sample rate
    chunk INTEGER NOT NULL, row INTEGER NOT NULL          -- where its representations are
);
CREATE INDEX IF NOT EXISTS windows_file ON windows(file_id);
CREATE TABLE IF NOT EXISTS integrity (  -- files of the index folder as written (see hade.index.integrity)
    path TEXT PRIMARY KEY,              -- relative to the index folder, e.g. arrays/c000001/embed.npy
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    sha256 TEXT,
    xxh3 TEXT                           -- XXH3-128, what a reading process verifies (hade.index.checksums)
);
"""

# the errors of a database that cannot be read, for callers that report damage (they never import sqlite3)
DatabaseError = sqlite3.DatabaseError


class StoreDatabase:
    """The connection to INDEX/index.sqlite (created with `create`, its schema migrated), the index folder's
    paths, transactions and the meta table. A part of `Store`, not used alone."""

    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root)
        # the command that repairs this index, for messages about damaged files (`hade.index.integrity`)
        self.repair = f"hade index FOLDER --out {self.root}"
        db = self.root / DB_FILE
        if not db.is_file() and not create:
            raise InputError(f"{self.root}: not a hade index (no {DB_FILE}); build one with `hade index`")
        self.root.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: an open Index may be used from a server's worker threads (callers serialise)
        self._conn = sqlite3.connect(str(db), isolation_level=None, timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if create:
            self._conn.executescript(SCHEMA)
            if "aux_caption" not in self.file_columns():  # indexes written before auxiliary captions existed
                self._conn.execute("ALTER TABLE files ADD COLUMN aux_caption TEXT")
            if not self._has_chunk_codecs():  # indexes written before token codecs
                self._conn.execute("ALTER TABLE chunks ADD COLUMN codec TEXT")
            if not self._has_fast_checksums():  # indexes written before read-time verification
                self._conn.execute("ALTER TABLE integrity ADD COLUMN xxh3 TEXT")
        schema = self.meta().schema
        if schema is not None and schema != SCHEMA_VERSION:
            raise InputError(f"{self.root}: index format {schema}, this hade reads format {SCHEMA_VERSION}; "
                             "rebuild it with `hade index --rebuild`")

    def _has_chunk_codecs(self) -> bool:
        return "codec" in {row[1] for row in self._conn.execute("PRAGMA table_info(chunks)")}

    def _has_fast_checksums(self) -> bool:
        return "xxh3" in {row[1] for row in self._conn.execute("PRAGMA table_info(integrity)")}

    def file_columns(self) -> set[str]:
        """Column names of the files table (older indexes lack `aux_caption` until a build adds it)."""
        return {row[1] for row in self._conn.execute("PRAGMA table_info(files)")}

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def arrays_dir(self) -> Path:
        return self.root / ARRAYS_DIR

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    def chunk_dir(self, chunk_id: int) -> Path:
        return self.arrays_dir / chunk_name(chunk_id)

    @property
    def codecs_dir(self) -> Path:
        return self.root / CODECS_DIR

    def codec_dir(self, codec_id: str) -> Path:
        return self.codecs_dir / codec_id

    def close(self) -> None:
        self._conn.close()

    # ---- transactions and meta -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception, KeyboardInterrupt included)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def meta(self) -> IndexMeta:
        """The index's meta (`IndexMeta.from_dict` upgrades an older index's; a new one reads as the defaults,
        `created` False)."""
        try:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError:
            rows = []
        return IndexMeta.from_dict({k: json.loads(v) for k, v in rows})

    def write_meta(self, meta: IndexMeta, fields: tuple[str, ...] | None = None) -> None:
        """Upsert `fields` of `meta` (default: all) into the meta table (call inside `transaction` to make
        them part of a commit)."""
        self._conn.executemany("INSERT INTO meta(key, value) VALUES(?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                               [(k, json.dumps(v)) for k, v in meta.to_dict(fields).items()])

    def update_meta(self, **changes: Any) -> None:
        """Upsert the meta fields `changes` ({IndexMeta field: value}; TypeError naming an unknown field)."""
        self.write_meta(IndexMeta().replace(**changes), tuple(changes))

    def bump_generation(self) -> int:
        """Increment the change counter (inside a transaction); returns the new value."""
        gen = self.generation + 1
        self.update_meta(generation=gen)
        return gen

    @property
    def generation(self) -> int:
        return self.meta().generation

    def integrity_check(self) -> list[str]:
        """What SQLite's ``PRAGMA integrity_check`` finds wrong ([] when the database is sound); raises
        `DatabaseError` when it cannot read the database at all."""
        return [r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"]


def quick_check(db: str | Path) -> list[str]:
    """What SQLite's ``PRAGMA quick_check`` finds wrong in the database file `db` ([] when sound), on a
    connection of its own (the database may be too damaged for `Store`); raises `DatabaseError` when it
    cannot read the file at all."""
    conn = sqlite3.connect(str(db))
    try:
        return [r[0] for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
    finally:
        conn.close()


def salvage_meta(db: str | Path) -> IndexMeta:
    """Whatever meta values a damaged database file still yields, read-only (the defaults when none)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            raw = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        finally:
            conn.close()
    except (sqlite3.Error, ValueError):
        raw = {}
    try:
        return IndexMeta.from_dict(raw)
    except (TypeError, ValueError, IndexError, AttributeError):  # a garbled value: nothing to rebuild from
        return IndexMeta()
