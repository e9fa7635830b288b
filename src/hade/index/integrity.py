"""Integrity of an index folder: what was written, whether it is still there, and the command that repairs it.

Every file the index writes besides the database — chunk arrays, token codec sets, the ANN, the model
copy — gets a row in the ``integrity`` table (path relative to the index folder, size, mtime_ns, sha256)
in the transaction that makes it part of the index (`Store.record_files`). Three levels of checking use those rows:

* quick (`quick_problems`, backs `Index.open`, `Index.health` and GET /health): stat sizes only, plus
  the SQLite header against the database file's size and each ``.npy`` header against its file's size
  (so that indexes written before the table existed are size-checked too), plus every file this process
  already found damaged when it read it. Milliseconds.
* read (`Store.verify_read`, `hade.index.checksums`): the first time a process reads a chunk array,
  a codec file or the ANN, its bytes are hashed (XXH3-128) and compared with the record; a mismatch
  raises IndexDamaged like a missing file, and from then on the quick check reports it too.
* build (`hade index` re-run, see `hade.index.repair`): quick, plus sha256 of the recorded files when
  their total is below `VERIFY_BUDGET` bytes or their mtime moved since they were recorded.
* deep (`check_index`, ``hade index --check``): everything hashed, ``PRAGMA integrity_check``, the ANN
  loaded, the model copy against the index's fingerprint.

Messages name the damaged file as ``INDEX/relative/path`` and end with the repair command, on one line.
"""
from __future__ import annotations

import json
import re
import shlex
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hade.errors import IndexDamaged
from hade.index import checksums
from hade.index.ann import read_ann_params
from hade.index.compression import TokenCompression
from hade.index.meta import IndexMeta
from hade.index.store import (ANN_JSON, ARRAYS_DIR, CODES_SUFFIX, DB_FILE, MODEL_DIR, MODEL_FILES, DatabaseError,
                              IntegrityRecord, Store, chunk_name, model_fingerprint, sha256_file)

VERIFY_BUDGET = 1 << 30  # bytes a plain `hade index` re-run hashes every time (beyond that: size + mtime)
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Problem:
    """A damaged file: `file` relative to the index folder, `problem` what is wrong (a phrase, e.g.
    "truncated (expected 512 bytes, found 100)"), `kind` one of 'db', 'chunk', 'codec' (a token codec set),
    'ann', 'model'."""

    file: str
    problem: str
    kind: str
    chunk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "problem": self.problem}


@dataclass(frozen=True)
class Health:
    """The quick check's answer (`Index.health`, GET /health): `ok`, or the damaged files (`problems`)
    and the `repair` command."""

    problems: tuple[Problem, ...] = ()
    repair: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        """"ok" or "degraded"."""
        return "ok" if self.ok else "degraded"

    def to_dict(self) -> dict[str, Any]:
        """{"status", "problems": [{"file", "problem"}], "repair"}: the JSON of /health."""
        return {"status": self.status, "problems": [p.to_dict() for p in self.problems], "repair": self.repair}

    def summary(self) -> str:
        """One line for a user: the first damaged file, how many more, and the repair command."""
        if self.ok:
            return "the index is healthy"
        first = self.problems[0]
        text = f"the index is damaged: {first.file} {first.problem}".rstrip()
        if len(self.problems) > 1:
            text += f" (and {len(self.problems) - 1} more)"
        return text + (f"; repair with `{self.repair}`" if self.repair else "")


@dataclass
class CheckResult:
    """`check_index` answer: `problems` (damaged files) and `notes` (e.g. files with no checksum yet),
    `repair` the command that repairs the problems (None when clean)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repair: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- the repair command ----------------------------------------------------------------------------
def repair_command(index: str | Path, meta: IndexMeta | None, ckpt: bool = False) -> str:
    """`hade index FOLDER --out INDEX` (with --shard, and --ckpt CKPT when the model copy is damaged)."""
    meta = meta or IndexMeta()
    folder = shlex.quote(str(meta.root)) if meta.root else "FOLDER"
    parts = ["hade index", folder]
    if ckpt:
        parts.append("--ckpt CKPT")
    parts.append(f"--out {shlex.quote(str(index))}")
    if meta.one_shard:
        parts.append(f"--shard {meta.one_shard[0]}/{meta.one_shard[1]}")
    if meta.follow_external_links:
        parts.append("--follow-external-links")
    return " ".join(parts)


def damaged(index: str | Path, problem: Problem, meta: IndexMeta | None) -> IndexDamaged:
    """The IndexDamaged for `problem`: '<index>/<file> is <problem>; repair with `<command>`'."""
    cmd = repair_command(index, meta, ckpt=problem.kind == "model")
    return IndexDamaged(f"{Path(index) / problem.file} is {problem.problem}; repair with `{cmd}`",
                        file=problem.file, repair=cmd)


# ---- single files -------------------------------------------------------------------------------------
def db_header_problem(index: str | Path) -> str | None:
    """Cheap check of index.sqlite: its header's page count × page size against the file size (a
    truncation), and the magic string. The header is only trusted when SQLite marks it valid (offset 92
    equals the change counter at 24); pages still in the WAL are not in the file yet, by design."""
    file = Path(index) / DB_FILE
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return f"not a SQLite database (found {size} bytes without a SQLite header)"
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change, pages, valid_for = struct.unpack(">I", head[24:28])[0], struct.unpack(">I", head[28:32])[0], \
        struct.unpack(">I", head[92:96])[0]
    if valid_for == change and pages and size < pages * page_size:
        return f"truncated (expected {pages * page_size} bytes, found {size})"
    return None


def npy_expected_size(file: Path) -> int:
    """Size in bytes the .npy file's own header promises (header + rows × row bytes); ValueError when the
    header cannot be read."""
    with open(file, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        offset = f.tell()
    return offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def size_problem(file: Path, recorded: int | None, npy: bool) -> str | None:
    """'missing' / 'truncated (...)' / 'the wrong size (...)' from a stat (and, for .npy, its header)."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    expected = recorded
    if expected is None and npy:
        try:
            expected = npy_expected_size(file)
        except (OSError, ValueError, SyntaxError) as e:
            return f"corrupt (unreadable .npy header: {' '.join(str(e).split())[:120]})"
    if expected is None or size == expected:
        return None
    what = "truncated" if size < expected else "the wrong size"
    return f"{what} (expected {expected} bytes, found {size})"


def hash_problem(file: Path, sha: str) -> str | None:
    try:
        if sha256_file(file) == sha:
            return None
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return "corrupt (its sha256 differs from the one recorded when it was written)"


# ---- records ------------------------------------------------------------------------------------------
def records(store: Store) -> dict[str, IntegrityRecord]:
    """{relative path: its record} of the integrity table ({} for indexes that predate it)."""
    return store.integrity_records()


def chunk_files(store: Store, meta: IndexMeta) -> list[tuple[int, str]]:
    """(chunk id, relative path) of every array file of every registered chunk (a token key of a chunk
    written with a codec set as its ``.codes.npy``)."""
    keys = sorted(meta.repr_spec or {})
    coded = TokenCompression.coded_keys(meta)
    return [(cid, f"{ARRAYS_DIR}/{chunk_name(cid)}/{k}{CODES_SUFFIX if codec and k in coded else ''}.npy")
            for cid, codec in store.chunk_codecs().items() for k in keys]


def codec_files(store: Store, meta: IndexMeta) -> list[tuple[str, str]]:
    """(codec set id, relative path) of the files of every codec set that a chunk uses or new chunks are
    written with."""
    used = {c for c in store.chunk_codecs().values() if c} | {TokenCompression.current_of(meta)}
    return [(cid, rel) for cid in sorted(c for c in used if c) for rel in store.codec_files(cid)]


def ann_file(index: Path, meta: IndexMeta) -> str | None:
    """The current ANN file's name per ann.json (None: no ANN expected, or ann.json unreadable)."""
    try:
        params = json.loads((index / ANN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return params.get("file") or None if params.get("kind") in ("flat", "ivf") else None


def model_files(index: Path, recs: dict[str, IntegrityRecord]) -> list[str]:
    """The model copy's files to check: the recorded ones, else config.json and model.safetensors."""
    recorded = sorted(p for p in recs if p.startswith(MODEL_DIR + "/"))
    return recorded or [f"{MODEL_DIR}/{name}" for name in MODEL_FILES]


# ---- quick check ----------------------------------------------------------------------------------------
def quick_problems(store: Store, meta: IndexMeta) -> list[Problem]:
    """Sizes of every registered chunk array, codec file, the ANN and the model copy against the records
    (and the .npy headers), and the files this process found damaged when it first read them
    (`hade.index.checksums.known_damage`); no hashing. Raises store.DatabaseError when the database
    cannot be read."""
    index = store.root
    recs = records(store)
    files: list[tuple[str, str, int | None, bool]] = [(rel, "chunk", cid, True)
                                                      for cid, rel in chunk_files(store, meta)]
    files += [(rel, "codec", None, False) for _, rel in codec_files(store, meta)]
    ann = ann_file(index, meta)
    if ann is not None:
        files.append((ann, "ann", None, False))
    files += [(rel, "model", None, False) for rel in model_files(index, recs)]
    out: list[Problem] = []
    for rel, kind, cid, npy in files:
        rec = recs.get(rel)
        if (p := size_problem(index / rel, rec.size if rec else None, npy=npy)) is not None:
            out.append(Problem(rel, p, kind, cid))
    listed = {p.file for p in out}
    seen = checksums.known_damage({rel: str(index / rel) for rel, *_ in files if rel not in listed})
    out += [Problem(rel, seen[rel], kind, cid) for rel, kind, cid, _ in files if rel in seen]
    return out


def verify_on_open(store: Store, meta: IndexMeta) -> None:
    """The small files an open index reads at once — the ANN and every codec set in use — against their
    checksums (`Store.verify_read`; chunk arrays are verified when a search first reads them).
    IndexDamaged naming the first damaged file and the repair command."""
    for _, rel in codec_files(store, meta):
        store.verify_read(rel)
    if (ann := ann_file(store.root, meta)) is not None:
        store.verify_read(ann)


def verify_chunks_later(store: Store, meta: IndexMeta, stop: threading.Event) -> threading.Thread:
    """Start hashing every chunk array of the index in a background thread (`Store.verify_later`): an
    opened index's first search then mostly finds its files verified."""
    return store.verify_later([rel for _, rel in chunk_files(store, meta)], stop)


def health(index: str | Path, meta: IndexMeta | None = None) -> Health:
    """The quick check as a `Health`. Never raises (an unexpected failure is itself reported as a problem)."""
    index = Path(index)
    try:
        problem = db_header_problem(index)
        if problem is not None:
            probs = [Problem(DB_FILE, problem, "db")]
        else:
            store = Store(index)
            try:
                meta = store.meta() if meta is None else meta
                probs = quick_problems(store, meta)
            finally:
                store.close()
    except DatabaseError as e:
        probs = [Problem(DB_FILE, f"corrupt ({' '.join(str(e).split())[:120]})", "db")]
    except Exception as e:  # noqa: BLE001 - health must never raise
        probs = [Problem(".", f"not checkable ({type(e).__name__}: {' '.join(str(e).split())[:120]})", "db")]
    if not probs:
        return Health()
    ckpt = any(p.kind == "model" for p in probs)
    return Health(tuple(probs), repair_command(index, meta, ckpt=ckpt))


# ---- deep check ---------------------------------------------------------------------------------------
def _deep_file(index: Path, rel: str, rec: IntegrityRecord | None, npy: bool, kind: str, chunk: int | None,
               res: CheckResult) -> None:
    if (p := size_problem(index / rel, rec.size if rec else None, npy=npy)) is not None:
        res.problems.append(Problem(rel, p, kind, chunk))
    elif rec is None or rec.sha256 is None:
        res.notes.append(f"{rel}: no checksum recorded (an index written before checksums); verified by size only "
                         "— the next `hade index` run records it")
    elif (p := hash_problem(index / rel, rec.sha256)) is not None:
        res.problems.append(Problem(rel, p, kind, chunk))


def _check_ann(index: Path, store: Store, meta: IndexMeta, recs: dict, res: CheckResult) -> None:
    ann = ann_file(index, meta)
    if meta.pooled_key is None:
        return
    if ann is None:
        res.problems.append(Problem(ANN_JSON, "missing or unreadable (the ANN cannot be found)", "ann"))
        return
    before = len(res.problems)
    _deep_file(index, ann, recs.get(ann), False, "ann", None, res)
    if len(res.problems) > before:
        return
    import faiss

    try:
        count = faiss.read_index(str(index / ann)).ntotal
    except RuntimeError as e:
        res.problems.append(Problem(ann, f"corrupt (faiss cannot read it: {' '.join(str(e).split())[:120]})", "ann"))
        return
    windows = store.count_windows()
    if count != windows:
        res.problems.append(Problem(ann, f"stale (holds {count} vectors, the index has {windows} windows)", "ann"))


def _check_model(index: Path, meta: IndexMeta, recs: dict, res: CheckResult) -> None:
    for rel in model_files(index, recs):
        _deep_file(index, rel, recs.get(rel), False, "model", None, res)
    if any(p.kind == "model" for p in res.problems) or not meta.created:
        return
    try:
        fp = model_fingerprint(index / MODEL_DIR)
    except Exception as e:  # noqa: BLE001 - reported as a problem
        res.problems.append(Problem(f"{MODEL_DIR}/", f"unreadable ({e})", "model"))
        return
    if fp != meta.fingerprint:
        res.problems.append(Problem(f"{MODEL_DIR}/model.safetensors", "not the model the index was built with "
                                    "(its fingerprint differs)", "model"))


def has_index_parts(folder: Path) -> bool:
    """Whether `folder` holds what `hade index` writes besides its database — the model copy and the ANN's
    ann.json or an arrays/ folder of chunk folders only: an index whose index.sqlite was deleted, which a
    re-run rebuilds (strict, so that a user's folder is never taken for one and cleared)."""
    if not all((folder / MODEL_DIR / name).is_file() for name in MODEL_FILES):
        return False
    arrays = folder / ARRAYS_DIR
    chunks = arrays.is_dir() and all(re.fullmatch(r"c\d{6,}", p.name) for p in arrays.iterdir())
    return (folder / ANN_JSON).is_file() or chunks


def _check_complete(store: Store, meta: IndexMeta, res: CheckResult) -> None:
    """What `Index.open` refuses besides damage: an index interrupted before anything was stored, or
    changed after its ANN was built (an interrupted `hade index`)."""
    if not meta.created:
        res.problems.append(Problem(DB_FILE, "incomplete (`hade index` was interrupted before anything was "
                                    "stored)", "db"))
        return
    params = read_ann_params(store.root)
    if params is None or params.generation != store.generation:
        res.problems.append(Problem(ANN_JSON, "stale (the index changed after its ANN was built: an interrupted "
                                    "`hade index`)", "ann"))


def check_index(index: str | Path, deep: bool = True) -> CheckResult:
    """Verify an index folder: the database (header, `PRAGMA integrity_check`), every chunk array, the ANN
    and the model copy against their recorded sizes and (deep) sha256. deep=False is the quick check."""
    index = Path(index)
    res = CheckResult()
    if not (index / DB_FILE).exists():
        what = "missing (the rest of an index is there)" if has_index_parts(index) else "missing (not a hade index?)"
        res.problems.append(Problem(DB_FILE, what, "db"))
        res.repair = repair_command(index, None)
        return res
    if (p := db_header_problem(index)) is not None:
        res.problems.append(Problem(DB_FILE, p, "db"))
        res.repair = repair_command(index, None)
        return res
    meta = IndexMeta()
    store = None
    try:
        store = Store(index)
        meta = store.meta()
        if deep:
            bad = store.integrity_check()
            if bad:
                raise DatabaseError("; ".join(bad[:3]))
        _check_complete(store, meta, res)
        if not deep:
            res.problems.extend(quick_problems(store, meta))
        else:
            recs = records(store)
            for cid, rel in chunk_files(store, meta):
                _deep_file(index, rel, recs.get(rel), True, "chunk", cid, res)
            for _, rel in codec_files(store, meta):
                _deep_file(index, rel, recs.get(rel), False, "codec", None, res)
            _check_ann(index, store, meta, recs, res)
            _check_model(index, meta, recs, res)
    except DatabaseError as e:
        res.problems.append(Problem(DB_FILE, f"corrupt ({' '.join(str(e).split())[:160]})", "db"))
    finally:
        if store is not None:
            store.close()
    if res.problems:
        res.repair = repair_command(index, meta, ckpt=any(p.kind == "model" for p in res.problems))
    return res


def damage_from_exception(index: Path, exc: BaseException, meta: IndexMeta | None) -> IndexDamaged | None:
    """IndexDamaged for a low-level read error of the index (sqlite corrupt, faiss unreadable), or None."""
    if isinstance(exc, IndexDamaged):
        return exc
    if isinstance(exc, DatabaseError):
        return damaged(index, Problem(DB_FILE, f"corrupt ({' '.join(str(exc).split())[:160]})", "db"), meta)
    return None
