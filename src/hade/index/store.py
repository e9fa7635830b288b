"""The on-disk store of a search index: SQLite metadata plus immutable numpy chunks of representations.

Layout of an index directory ``INDEX/``::

    index.sqlite        meta (key -> JSON), files, windows, chunks, integrity (see SCHEMA)
    arrays/c000001/     one chunk: ``{repr key}.npy`` for each key of the head's ``audio_repr``,
                        rows = windows, e.g. ``embed.npy`` [R, D] or ``tha_audio_0.npy`` [R, M, d];
                        floating point in the storage dtype, float16 by default (`--storage-dtype
                        float32` keeps float32): unit vectors and projected tokens lose ~1e-3
                        relative, which moves scores by ~1e-3 and is far below score gaps that
                        matter; a value beyond the float16 range stops the build with a message
                        asking for float32. Masks/ints as is. In a chunk written with a token
                        codec set (the chunks table's ``codec``), each token key is stored as
                        ``{key}.codes.npy`` [R, M, B] uint8 instead (`hade.index.tokens`).
    codecs/<id>/        a token codec set (``codecs.json`` + ``{key}.faiss``/``.json`` a key), named by
                        the sha256 of its files, shared by the chunks that name it
    ann-<gen>.faiss     the ANN index over the pooled embeddings (see ``hade.index.ann``)
    ann.json            which ANN file is current, its type and parameters, the generation it reflects
    model/              a copy of the checkpoint (config.json, model.safetensors, tokenizer/)
    .lock               held (flock) while ``hade index`` writes

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

Storage behind one door: every SQL statement of the index is a `Store` method, and rows come back as named
records (`FileRecord`, `WindowRecord`, `IntegrityRecord`); no other module talks to SQLite.

Integrity: every chunk array, codec file, the ANN file and the model copy's files have a row in
``integrity`` (size, mtime, sha256, XXH3-128) written in the transaction that makes them part of the index
(`register_chunk`, `record_files`); a reading process verifies each file against it the first time it
reads it (`verify_read`, `hade.index.checksums`), `hade.index.integrity` checks them and
`hade.index.repair` repairs what fails.

File paths: a name that is not UTF-8 is kept as its bytes (a BLOB, `db_path`) and read back with
surrogate escapes (`path_of_db`), so any name the file system allows is indexed.

Consistency under a kill: a chunk directory is written under a temporary name and renamed into place
(`atomic_dir`), *then* registered in SQLite in the same transaction as the windows that point into it.
A chunk directory that no transaction registered is an orphan and is deleted by the next build. Every
committed change increments the ``generation`` meta value; the ANN is current only when ``ann.json``
records the same generation.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import tokenize
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from hade.errors import IndexDamaged, InputError
from hade.index import checksums
from hade.index.checksums import file_digests
from hade.index.meta import SCHEMA_VERSION, IndexMeta
from hade.utils.atomic import atomic_dir

DB_FILE = "index.sqlite"
ARRAYS_DIR = "arrays"
CODECS_DIR = "codecs"
CODES_SUFFIX = ".codes"  # a token key's codes are the array "{key}.codes"
MODEL_DIR = "model"
LOCK_FILE = ".lock"
ANN_JSON = "ann.json"
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_DIR = "tokenizer"

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

_CHUNK_RE = re.compile(r"^c(\d{6,})$")

# the errors of a database that cannot be read, for callers that report damage (they never import sqlite3)
DatabaseError = sqlite3.DatabaseError


def chunk_name(chunk_id: int) -> str:
    return f"c{chunk_id:06d}"


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def model_fingerprint(ckpt: str | Path) -> str:
    """sha256 over config.json and model.safetensors of a checkpoint directory (names and bytes)."""
    ckpt = Path(ckpt)
    h = hashlib.sha256()
    for name in MODEL_FILES:
        file = ckpt / name
        if not file.is_file():
            raise InputError(f"{ckpt}: not a hade checkpoint (no {name}); give a directory written by `hade train`")
        h.update(name.encode() + b"\0" + sha256_file(file).encode() + b"\0")
    return h.hexdigest()


def copy_model(ckpt: str | Path, dest: str | Path) -> None:
    """Copy the files a checkpoint needs for inference (not its training state) atomically to `dest`."""
    ckpt = Path(ckpt)
    with atomic_dir(dest) as tmp:
        for name in MODEL_FILES:
            shutil.copy2(ckpt / name, tmp / name)
        if (ckpt / TOKENIZER_DIR).is_dir():
            shutil.copytree(ckpt / TOKENIZER_DIR, tmp / TOKENIZER_DIR)


class FileRecord(NamedTuple):
    """One row of the files table: an audio file as indexed (`id` None for one not yet inserted)."""

    id: int | None
    path: str  # POSIX, relative to the indexed folder
    size: int
    mtime_ns: int
    sha256: str | None
    status: str  # 'ok' or 'error'
    error: str | None  # why an 'error' file was skipped
    duration: float | None  # seconds at the model's rate
    num_windows: int
    aux_caption: str | None  # the auxiliary caption its windows were encoded with (HCI+AC)


class WindowRecord(NamedTuple):
    """One row of the windows table: a span of a file and where its representations are (`id` None: the
    store numbers it)."""

    file_id: int
    start: float  # seconds in the file
    end: float
    start_sample: int  # at the model's sample rate
    end_sample: int
    chunk: int
    row: int
    id: int | None = None


class IntegrityRecord(NamedTuple):
    """What the integrity table recorded of an index file when it was written (`mtime_ns`, `sha256` None
    for records of indexes written before checksums; `xxh3` None for those written before read-time
    verification)."""

    size: int
    mtime_ns: int | None
    sha256: str | None
    xxh3: str | None = None


class Placement(NamedTuple):
    """Where a window's representations live after compaction."""

    window_id: int
    chunk: int
    row: int


_FILE_COLUMNS = FileRecord._fields


def db_path(rel: str) -> str | bytes:
    """A relative path as the files table keeps it: text when it is valid UTF-8, else its file-system
    bytes as a BLOB. File names are bytes on POSIX; one that is not UTF-8 (a Latin-1 ``n\\xe4me.wav``)
    reaches Python as text with surrogate escapes (PEP 383), which SQLite's text cannot hold."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel)
    return rel


def path_of_db(value: str | bytes) -> str:
    """The relative path `db_path` stored, as Python's file functions take it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _file_record(row: tuple) -> FileRecord:
    record = FileRecord(*row)
    return record._replace(path=path_of_db(record.path)) if isinstance(record.path, bytes) else record
_WINDOW_COLUMNS = WindowRecord._fields


class Store:
    """SQLite + chunk arrays of one index directory: every SQL statement of the index is here, and rows come
    back as named records. Not thread-safe; one writer at a time (see `write_lock`)."""

    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root)
        # the command that repairs this index, for messages about damaged files (`hade.index.integrity`)
        self.repair = f"hade index FOLDER --out {self.root}"
        db = self.root / DB_FILE
        if not db.is_file() and not create:
            raise InputError(f"{self.root}: not a hade index (no {DB_FILE}); build one with `hade index`")
        self.root.mkdir(parents=True, exist_ok=True)
        self._select_files: str | None = None
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

    # ---- files -----------------------------------------------------------------------------------
    def _file_select(self) -> str:
        """SELECT of every FileRecord column (NULL for a column an older index lacks) FROM files."""
        if self._select_files is None:
            cols = self.file_columns()
            self._select_files = ("SELECT " + ", ".join(c if c in cols else f"NULL AS {c}" for c in _FILE_COLUMNS)
                                  + " FROM files")
        return self._select_files

    def files(self, status: str | None = None) -> list[FileRecord]:
        """Every indexed file (or those with `status` 'ok' / 'error'), in id order."""
        where, args = (" WHERE status=?", (status,)) if status is not None else ("", ())
        return [_file_record(r) for r in self._conn.execute(self._file_select() + where + " ORDER BY id", args)]

    def file_record(self, path: str) -> FileRecord | None:
        """The file indexed at relative `path`, or None."""
        row = self._conn.execute(self._file_select() + " WHERE path=?", (db_path(path),)).fetchone()
        return _file_record(row) if row is not None else None

    def same_content(self, sha256: str, other_than: str, aux_caption: str | None) -> FileRecord | None:
        """The first file (by id) other than `other_than` with these bytes whose stored windows a file with
        caption `aux_caption` can reuse: an unreadable one (same error), or one encoded with that caption."""
        row = self._conn.execute(self._file_select() + " WHERE sha256=? AND path!=? AND (status='error' OR "
                                 "aux_caption IS ?) ORDER BY id LIMIT 1",
                                 (sha256, db_path(other_than), aux_caption)).fetchone()
        return _file_record(row) if row is not None else None

    def count_files(self, status: str | None = None) -> int:
        where, args = (" WHERE status=?", (status,)) if status is not None else ("", ())
        return int(self._conn.execute("SELECT COUNT(*) FROM files" + where, args).fetchone()[0])

    def add_file(self, record: FileRecord) -> int:
        """Insert a file (inside a transaction); its id is `record.id`, or a new one when None. Returns it."""
        marks = ",".join("?" * len(_FILE_COLUMNS))
        return int(self._conn.execute(f"INSERT INTO files({', '.join(_FILE_COLUMNS)}) VALUES({marks})",
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
            f"SELECT {', '.join(_WINDOW_COLUMNS)} FROM windows WHERE file_id=? ORDER BY id", (file_id,))]

    def put_windows(self, windows: Iterable[WindowRecord]) -> None:
        """Insert windows (inside the transaction that registers their chunk)."""
        self._conn.executemany(f"INSERT INTO windows({', '.join(_WINDOW_COLUMNS)}) VALUES(?,?,?,?,?,?,?,?)",
                               [tuple(w) for w in windows])

    def move_windows(self, placements: Iterable[Placement]) -> None:
        """Point windows at new rows (compaction; inside the transaction registering the new chunks)."""
        self._conn.executemany("UPDATE windows SET chunk=?, row=? WHERE id=?",
                               [(p.chunk, p.row, p.window_id) for p in placements])

    def count_windows(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0])

    # ---- chunks ----------------------------------------------------------------------------------
    def _dir_chunk_ids(self) -> list[int]:
        if not self.arrays_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.arrays_dir.iterdir() if (m := _CHUNK_RE.match(p.name)))

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

    def copy_codec_set(self, other: "Store", codec_id: str) -> None:
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

    # ---- integrity records -------------------------------------------------------------------------
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

    # ---- arrays ------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def write_lock(index_dir: str | Path) -> Iterator[None]:
    """Exclusive lock on INDEX/.lock for one writer; a second `hade index` on the same index fails fast."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{index_dir}: another `hade index` is writing this index; "
                             "wait for it to finish") from None
        yield
    finally:
        os.close(fd)
