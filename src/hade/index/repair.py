"""Repair by re-running `hade index`: what a build does before its normal pass over the folder.

1. `clear_index_temps`: temporaries a killed write left in the index folder (``.model.*.tmp``,
   ``.ann-3.faiss.*.tmp``, ``.model.old`` after `recover_dir` had its chance) are deleted.
2. `set_aside_damaged_db`: an unreadable index.sqlite (bad header, truncated, ``PRAGMA quick_check``
   failing) is moved to ``index.sqlite.damaged`` together with the arrays and the ANN it described (they
   cannot be interpreted without it); the build then starts from scratch with the intact model copy (or
   --ckpt) and, unless given again, the window, hop and storage dtype the old database still shows.
3. `repair_store`: the model copy is checked against the index's fingerprint (re-copied from --ckpt, or
   an error asking for it); every chunk array against its recorded size, and its checksum: XXH3 every
   run where recorded (`hade.index.checksums`), else sha256 when the recorded files total less than
   `VERIFY_BUDGET` bytes or its mtime moved — a damaged chunk's files
   are dropped from the store (their windows, their rows, the chunk) so that the normal pass re-encodes
   exactly those files; a damaged ANN is deleted so that `finalize` rebuilds it. Files written before
   checksums existed get their records now when their size verifies.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from hade.errors import InputError
from hade.index import checksums, integrity
from hade.index.compression import TokenCompression
from hade.index.meta import IndexMeta
from hade.index.integrity import Problem, ann_file, chunk_files, codec_files, records, size_problem
from hade.index.store import (ANN_JSON, ARRAYS_DIR, CODECS_DIR, DB_FILE, MODEL_DIR, DatabaseError, IntegrityRecord,
                              Store, chunk_name, copy_model, model_fingerprint, quick_check, salvage_meta)
from hade.utils.atomic import recover_dir

DAMAGED_SUFFIX = ".damaged"


def clear_index_temps(out: Path) -> list[str]:
    """Delete temporaries of killed atomic writes in the index folder (after restoring an interrupted model
    swap); returns the names removed."""
    if not out.is_dir():
        return []
    recover_dir(out / MODEL_DIR)
    removed = []
    for p in sorted(out.iterdir()):
        if p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _db_problem(out: Path) -> str | None:
    if (problem := integrity.db_header_problem(out)) is not None:
        return problem
    try:
        bad = quick_check(out / DB_FILE)
    except DatabaseError as e:
        return f"corrupt ({' '.join(str(e).split())[:160]})"
    return f"corrupt ({'; '.join(bad[:3])})" if bad else None


def set_aside_damaged_db(out: Path) -> tuple[IndexMeta, str] | None:
    """When index.sqlite exists and is damaged: move it aside, delete the arrays and the ANN, and return
    (the meta values it still yields, a note saying so); None when it is fine or absent."""
    db = out / DB_FILE
    if not db.exists():
        if not integrity.has_index_parts(out):
            return None
        _drop_described(out)
        return IndexMeta(), (f"{DB_FILE} was missing: deleted the arrays, codecs and ANN it described and rebuilt the "
                    "index from scratch with the model copy (or --ckpt)")
    problem = _db_problem(out)
    if problem is None:
        return None
    meta = salvage_meta(db)
    aside = out / (DB_FILE + DAMAGED_SUFFIX)
    db.replace(aside)
    _drop_described(out)
    return meta, (f"{DB_FILE} was {problem}: moved it to {aside.name} and rebuilt the index from scratch "
                  "with the model copy (or --ckpt)")


def _drop_described(out: Path) -> None:
    """Delete what a lost database described (its WAL, the ANN, the chunk arrays and codec sets)."""
    for suffix in ("-wal", "-shm"):
        (out / (DB_FILE + suffix)).unlink(missing_ok=True)
    (out / ANN_JSON).unlink(missing_ok=True)
    for p in out.glob("ann-*.faiss"):
        p.unlink()
    shutil.rmtree(out / ARRAYS_DIR, ignore_errors=True)
    shutil.rmtree(out / CODECS_DIR, ignore_errors=True)


def _model_problem(store: Store, meta: IndexMeta, recs: dict, hash_all: bool) -> Problem | None:
    """The first problem of the model copy: a recorded file missing, resized or (when cheap) with another
    checksum, or config + weights that are not the fingerprinted model."""
    for rel in integrity.model_files(store.root, recs):
        if (p := _file_problem(store.root, rel, recs.get(rel), False, hash_all)) is not None:
            return Problem(rel, p, "model")
    try:
        fp = model_fingerprint(store.model_dir)
    except InputError:
        fp = None
    if fp != meta.fingerprint:
        return Problem(f"{MODEL_DIR}/model.safetensors", "not the model the index was built with (its "
                       "fingerprint differs)", "model")
    return None


def _repair_model(store: Store, meta: IndexMeta, ckpt: Path | None, recs: dict, hash_all: bool,
                  notes: list[str]) -> None:
    """Re-copy a damaged model copy from --ckpt (whose fingerprint the caller already matched), or raise
    IndexDamaged asking for --ckpt; record the copy's files when they have no records yet."""
    problem = _model_problem(store, meta, recs, hash_all)
    if problem is None:
        if not any(rel.startswith(MODEL_DIR + "/") for rel in recs):  # an index from before checksums
            store.record_model()
        return
    if ckpt is None:
        raise integrity.damaged(store.root, problem, meta)
    copy_model(ckpt, store.model_dir)
    store.record_model()
    notes.append(f"{problem.file} was {problem.problem}: copied the model again from {ckpt}")


def _file_problem(root: Path, rel: str, rec: IntegrityRecord | None, npy: bool, hash_all: bool) -> str | None:
    """Size check, then the checksum when it is cheap enough (hash_all) or the file's mtime moved."""
    if (p := size_problem(root / rel, rec.size if rec else None, npy=npy)) is not None:
        return p
    if rec is None or rec.sha256 is None:
        return None
    if rec.xxh3 is not None:  # fast enough to hash every run (what a search would find, hade.index.checksums)
        return checksums.verify(root / rel, checksums.Expected(rec.size, rec.sha256, rec.xxh3))
    if hash_all or (root / rel).stat().st_mtime_ns != rec.mtime_ns:
        return integrity.hash_problem(root / rel, rec.sha256)
    return None


def drop_chunks(store: Store, chunks: dict[int, list[tuple[str, str]]], notes: list[str]) -> None:
    """Remove damaged chunks and every file with a window in them from the store (they are re-encoded by
    the pass that follows), then delete the chunk folders."""
    ids = sorted(chunks)
    paths = store.paths_in_chunks(ids)
    with store.transaction():
        store.remove_files(paths)
        store.forget_chunks(ids)
        store.bump_generation()
    for cid in ids:
        shutil.rmtree(store.chunk_dir(cid), ignore_errors=True)
        what = "; ".join(f"{rel} was {p}" for rel, p in chunks[cid])
        notes.append(f"{what}: dropped chunk {chunk_name(cid)}, re-encoding the files that had windows in it")
    notes.append(f"{len(paths)} files to re-encode because of damaged arrays")


def _repair_chunks(store: Store, meta: IndexMeta, recs: dict, hash_all: bool, notes: list[str]) -> None:
    damaged: dict[int, list[tuple[str, str]]] = {}
    backfill = []
    for cid, rel in chunk_files(store, meta):
        rec = recs.get(rel)
        if (p := _file_problem(store.root, rel, rec, True, hash_all)) is not None:
            damaged.setdefault(cid, []).append((rel, p))
        elif rec is None or rec.sha256 is None or (rec.xxh3 is None and hash_all):  # hash_all: verified above
            backfill.append(rel)
    if damaged:
        drop_chunks(store, damaged, notes)
    backfill = [rel for rel in backfill if int(rel.split("/")[1][1:]) not in damaged]
    if backfill:
        with store.transaction():
            store.record_files(backfill)


def _repair_codecs(store: Store, meta: IndexMeta, recs: dict, hash_all: bool, notes: list[str]) -> None:
    """A damaged token codec set: drop the chunks written with it (their files are re-encoded) and the set;
    when new chunks were written with it, the next chunk fits a new one."""
    damaged: dict[str, list[tuple[str, str]]] = {}
    for codec_id, rel in codec_files(store, meta):
        if (p := _file_problem(store.root, rel, recs.get(rel), False, hash_all)) is not None:
            damaged.setdefault(codec_id, []).append((rel, p))
    for codec_id, problems in damaged.items():
        chunks = {cid: problems for cid, c in store.chunk_codecs().items() if c == codec_id}
        if chunks:
            drop_chunks(store, chunks, notes)
        state = TokenCompression.without(store.meta(), codec_id)
        if state is not None:
            with store.transaction():
                store.update_meta(token_codec=state)
        store.drop_codec_set(codec_id)
        notes.append(f"{'; '.join(f'{rel} was {p}' for rel, p in problems)}: dropped token codec set {codec_id}")


def _repair_ann(store: Store, meta: IndexMeta, recs: dict, hash_all: bool, notes: list[str]) -> None:
    ann = ann_file(store.root, meta)
    if ann is None:
        return
    rec = recs.get(ann)
    problem = _file_problem(store.root, ann, rec, False, hash_all)
    if problem is None and rec is None:  # no record yet: faiss must read it, then it is recorded
        import faiss

        try:
            faiss.read_index(str(store.root / ann))
        except RuntimeError:
            problem = "corrupt (faiss cannot read it)"
        else:
            with store.transaction():
                store.record_files([ann])
            return
    if problem is not None:
        (store.root / ANN_JSON).unlink(missing_ok=True)
        (store.root / ann).unlink(missing_ok=True)
        notes.append(f"{ann} was {problem}: rebuilding the ANN")


def repair_store(store: Store, meta: IndexMeta, ckpt: Path | None,
                 budget: int = integrity.VERIFY_BUDGET) -> list[str]:
    """Check and repair the model copy, the chunk arrays and the ANN of an open, readable store (see the
    module docstring); returns notes saying what was repaired."""
    notes: list[str] = []
    recs = records(store)
    hash_all = sum(rec.size for rec in recs.values() if rec.sha256) <= budget
    _repair_model(store, meta, ckpt, recs, hash_all, notes)
    recs = records(store)
    _repair_codecs(store, meta, recs, hash_all, notes)
    recs = records(store)
    _repair_chunks(store, store.meta(), recs, hash_all, notes)
    _repair_ann(store, meta, recs, hash_all, notes)
    return notes
