"""The on-disk store of a search index: SQLite metadata plus immutable numpy chunks of representations.

Layout of an index directory ``INDEX/``::

    index.sqlite        meta (key -> JSON), files, windows, chunks, integrity (see SCHEMA)
    arrays/c000001/     one chunk: ``{repr key}.npy`` for each key of the head's ``audio_repr``,
                        rows = windows, e.g. ``embed.npy`` [R, D] or ``tha_audio_0.npy`` [R, M, d];
                        floating point as float16 by default (`--precision float32` to keep float32):
                        unit vectors and projected tokens lose ~1e-3 relative, which moves scores by
                        ~1e-3 and is far below score gaps that matter; a value beyond the float16
                        range stops the build with a message asking for float32. Masks/ints as is.
    ann-<gen>.faiss     the ANN index over the pooled embeddings (see ``hade.index.ann``)
    ann.json            which ANN file is current, its type and parameters, the generation it reflects
    model/              a copy of the checkpoint (config.json, model.safetensors, tokenizer/)
    .lock               held (flock) while ``hade index`` writes

Meta keys: schema, fingerprint (sha256 of model.safetensors + config.json), head, root (the indexed
folder), shard ([i, N] or null), sample_rate, window_samples, hop_samples, precision, repr_spec
({key: {shape, dtype}}), pooled_key (the stored key the ANN indexes; null for heads without a pooled
embedding, e.g. pure THA, which are searched exhaustively), ann_threshold, generation,
follow_external_links (whether files resolving outside the folder were indexed and may be served).

Integrity: every chunk array, the ANN file and the model copy's files have a row in ``integrity`` (size,
mtime, sha256) written in the transaction that makes them part of the index (`register_chunk`,
`record_files`); `hade.index.integrity` checks them and `hade.index.repair` repairs what fails.

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
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hade.errors import IndexDamaged, InputError
from hade.utils.atomic import atomic_dir

SCHEMA_VERSION = 1
DB_FILE = "index.sqlite"
ARRAYS_DIR = "arrays"
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
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, rows INTEGER NOT NULL);
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
    sha256 TEXT
);
"""

_CHUNK_RE = re.compile(r"^c(\d{6,})$")


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


class Store:
    """SQLite + chunk arrays of one index directory. Not thread-safe; one writer at a time (see `lock`)."""

    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root)
        # the command that repairs this index, for messages about damaged files (`hade.index.integrity`)
        self.repair = f"hade index FOLDER --out {self.root}"
        db = self.root / DB_FILE
        if not db.is_file() and not create:
            raise InputError(f"{self.root}: not a hade index (no {DB_FILE}); build one with `hade index`")
        self.root.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: an open Index may be used from a server's worker threads (callers serialise)
        self.conn = sqlite3.connect(str(db), isolation_level=None, timeout=30.0, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if create:
            self.conn.executescript(SCHEMA)
            if "aux_caption" not in self.file_columns():  # indexes written before auxiliary captions existed
                self.conn.execute("ALTER TABLE files ADD COLUMN aux_caption TEXT")
        schema = self.meta().get("schema")
        if schema is not None and schema != SCHEMA_VERSION:
            raise InputError(f"{self.root}: index format {schema}, this hade reads format {SCHEMA_VERSION}; "
                             "rebuild it with `hade index --rebuild`")

    def file_columns(self) -> set[str]:
        """Column names of the files table (older indexes lack `aux_caption` until a build adds it)."""
        return {row[1] for row in self.conn.execute("PRAGMA table_info(files)")}

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def arrays_dir(self) -> Path:
        return self.root / ARRAYS_DIR

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    def chunk_dir(self, chunk_id: int) -> Path:
        return self.arrays_dir / chunk_name(chunk_id)

    def close(self) -> None:
        self.conn.close()

    # ---- transactions and meta -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception, KeyboardInterrupt included)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def meta(self) -> dict[str, Any]:
        try:
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError:
            return {}
        return {k: json.loads(v) for k, v in rows}

    def set_meta(self, **values: Any) -> None:
        """Upsert meta values (call inside `transaction` to make them part of a commit)."""
        self.conn.executemany("INSERT INTO meta(key, value) VALUES(?, ?) "
                              "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                              [(k, json.dumps(v)) for k, v in values.items()])

    def bump_generation(self) -> int:
        """Increment the change counter (inside a transaction); returns the new value."""
        gen = int(self.meta().get("generation", 0)) + 1
        self.set_meta(generation=gen)
        return gen

    @property
    def generation(self) -> int:
        return int(self.meta().get("generation", 0))

    # ---- chunks ----------------------------------------------------------------------------------
    def _dir_chunk_ids(self) -> list[int]:
        if not self.arrays_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.arrays_dir.iterdir() if (m := _CHUNK_RE.match(p.name)))

    def write_chunk(self, arrays: dict[str, np.ndarray]) -> int:
        """Write the arrays (same first dimension) as a new chunk directory, atomically; returns its id.

        The chunk is not part of the index until `register_chunk` is committed with windows using it."""
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"write_chunk: arrays differ in rows: {rows}")
        last = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        chunk_id = max([last, *self._dir_chunk_ids()]) + 1
        self.arrays_dir.mkdir(parents=True, exist_ok=True)
        with atomic_dir(self.chunk_dir(chunk_id)) as tmp:
            for key, arr in arrays.items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        return chunk_id

    def register_chunk(self, chunk_id: int, rows: int) -> None:
        """Register a written chunk (inside the transaction that adds its windows) and record its files'
        sizes and checksums, so that later damage to them is detected."""
        self.conn.execute("INSERT INTO chunks(id, rows) VALUES(?, ?)", (chunk_id, rows))
        folder = self.chunk_dir(chunk_id)
        self.record_files(sorted(f"{ARRAYS_DIR}/{folder.name}/{p.name}" for p in folder.glob("*.npy")))

    def record_files(self, rels: list[str]) -> None:
        """Upsert size, mtime and sha256 of index files (paths relative to the index folder) into the
        integrity table (call inside `transaction` when the files become part of the index)."""
        rows = []
        for rel in rels:
            st = (self.root / rel).stat()
            rows.append((rel, st.st_size, st.st_mtime_ns, sha256_file(self.root / rel)))
        self.conn.executemany("INSERT INTO integrity(path, size, mtime_ns, sha256) VALUES(?,?,?,?) "
                              "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                              "sha256=excluded.sha256", rows)

    def forget_files(self, prefix: str) -> None:
        """Drop the integrity records of files whose relative path starts with `prefix`."""
        self.conn.execute("DELETE FROM integrity WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))

    def record_model(self) -> None:
        """Record the model copy's files (config, weights, tokenizer) in their own transaction."""
        rels = sorted(p.relative_to(self.root).as_posix() for p in self.model_dir.rglob("*") if p.is_file())
        with self.transaction():
            self.forget_files(MODEL_DIR + "/")
            self.record_files(rels)

    def load_array(self, chunk_id: int, key: str, mmap: bool = True) -> np.ndarray:
        """One stored array, memory-mapped; IndexDamaged (naming the file and the repair command in
        `self.repair`) when it is missing, truncated or not an array file."""
        file = self.chunk_dir(chunk_id) / f"{key}.npy"
        try:
            return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            what = "missing"
        except (OSError, ValueError, EOFError) as e:
            what = f"damaged ({' '.join(str(e).split())[:120]})"
        rel = file.relative_to(self.root).as_posix()
        raise IndexDamaged(f"{self.root / rel} is {what}; repair with `{self.repair}`", file=rel, repair=self.repair)

    def cleanup(self) -> dict[str, int]:
        """Delete orphan chunk directories (never committed), chunks no window points to, and temporaries."""
        removed = {"orphan_chunks": 0, "unused_chunks": 0}
        used = {r[0] for r in self.conn.execute("SELECT DISTINCT chunk FROM windows")}
        known = {r[0] for r in self.conn.execute("SELECT id FROM chunks")}
        unused = sorted(known - used)
        if unused:
            with self.transaction() as c:
                c.executemany("DELETE FROM chunks WHERE id=?", [(i,) for i in unused])
                for cid in unused:
                    self.forget_files(f"{ARRAYS_DIR}/{chunk_name(cid)}/")
        for cid in unused:
            shutil.rmtree(self.chunk_dir(cid), ignore_errors=True)
            removed["unused_chunks"] += 1
        for cid in self._dir_chunk_ids():
            if cid not in known:
                shutil.rmtree(self.chunk_dir(cid), ignore_errors=True)
                removed["orphan_chunks"] += 1
        if self.arrays_dir.is_dir():
            for p in self.arrays_dir.iterdir():
                if p.name.startswith("."):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return removed

    # ---- windows as arrays -----------------------------------------------------------------------
    def window_table(self) -> dict[str, np.ndarray]:
        """All windows ordered by id: id, file_id, start, end, start_sample, end_sample, chunk, row ([N] each)."""
        rows = self.conn.execute("SELECT id, file_id, start, end, start_sample, end_sample, chunk, row "
                                 "FROM windows ORDER BY id").fetchall()
        names = ("id", "file_id", "start", "end", "start_sample", "end_sample", "chunk", "row")
        if not rows:
            return {n: np.zeros(0, np.float64 if n in ("start", "end") else np.int64) for n in names}
        cols = list(zip(*rows))
        return {n: np.asarray(col, np.float64 if n in ("start", "end") else np.int64) for n, col in zip(names, cols)}


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
