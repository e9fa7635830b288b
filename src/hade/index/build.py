"""`hade index`: walk a folder, cut files into overlapping windows, encode them, keep the store up to date.

Incremental: a file whose size and mtime match the store is skipped without being read; a file whose
size or mtime changed is hashed (sha256), and re-encoded only when its bytes changed (a file with the
same bytes as one already indexed — a copy or a rename — reuses its stored windows). Deleted files are
removed. Work is committed in SQLite transactions after every encoder batch (files whose windows are
all encoded, their chunk of arrays written atomically first), so a killed run resumes where it stopped.
At the end the ANN index is rebuilt from the store when anything changed (`hade.index.finalize`).

Auxiliary captions (heads that use them, HCI+AC): `aux_captions` maps a file — by its path relative to
the folder, or else by its file name — to a machine-generated caption, and its windows are encoded with
it. The caption is stored per file, so a later run with a changed caption re-encodes that file only;
a run without `aux_captions` leaves already indexed files as they are and encodes new or changed ones
without.

Symbolic links: a file (or a folder) under `folder` that resolves outside it is not indexed unless
`follow_external_links` (``--follow-external-links``); it is listed in `BuildReport.skipped`. The choice
is stored in the index meta, and the server hands out external targets only for such an index.

Integrity and repair: every array chunk, the ANN and the model copy are recorded (size, sha256) when
written; a re-run first removes temporaries of killed writes, then checks what was recorded and repairs
damage — re-encoding only the files whose windows lived in a damaged chunk, re-copying a damaged model
copy from --ckpt, rebuilding a damaged ANN, rebuilding from scratch when index.sqlite is unreadable — and
says what it repaired in `BuildReport.repaired` (see `hade.index.repair`, `hade.index.integrity`).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hade.config import check_compute, seconds_to_samples
from hade.errors import InputError
from hade.index.ann import DEFAULT_THRESHOLD
from hade.index.builder import Builder
from hade.index.compression import NO_CODEC, TokenCompression
from hade.index.finalize import finalize
from hade.index.integrity import has_index_parts
from hade.index.repair import clear_index_temps, repair_store, set_aside_damaged_db
from hade.index.meta import SCHEMA_VERSION, IndexMeta
from hade.index.report import BuildReport
from hade.index.settings import IndexSettings
from hade.index.store import (ARRAYS_DIR, DB_FILE, LOCK_FILE, MODEL_DIR, Store, copy_model, model_fingerprint,
                              write_lock)
from hade.index.windows import (in_shard, parse_shard, resolve_window, scan_audio, scan_folder,  # noqa: F401
                                window_bounds)
from hade.utils.device import resolve_device
from hade.utils.outdir import OutputKind, claim_output_dir, has_any

# An index folder, for the --out check (hade.utils.outdir): its database, or the parts of one whose database
# was deleted (a re-run repairs it); the lock file alone is no index yet.
INDEX_OUTPUT = OutputKind("hade index", lambda folder: has_any(DB_FILE)(folder) or has_index_parts(folder),
                          scratch=(LOCK_FILE,))


def _wipe(out: Path) -> None:
    """--rebuild: delete the database, the ANN, the arrays and the model copy (not the lock)."""
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", "ann.json"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("ann-*.faiss"):
        p.unlink()
    for d in (ARRAYS_DIR, MODEL_DIR):
        shutil.rmtree(out / d, ignore_errors=True)


@dataclass(frozen=True)
class _Request:
    """What one `build_index` call asks for: the folder, the model (with its fingerprint), the settings an
    existing index must match (or a new one gets) and how to run, and the caption table read from them."""

    folder: Path
    ckpt: str | Path | None
    settings: IndexSettings
    fingerprint: str | None = None  # of ckpt
    captions: dict[str, str] | None = None


def build_index(folder: str | Path, out: str | Path, ckpt: str | Path | None = None,
                settings: IndexSettings | None = None, **options: Any) -> BuildReport:
    """Index (or bring up to date, repairing damage) the audio files under `folder` into the index `out`.

    ckpt: checkpoint directory; required for a new index, optional afterwards (the index's copy is used).
    settings: what the build is asked for (`IndexSettings`, whose docstring describes every field; default:
    its defaults); `options` are `IndexSettings` fields that replace those of `settings`
    (``build_index(folder, out, ckpt, window=2.0)``); an unknown or bad one raises one InputError naming it.
    Returns what the run did, a `BuildReport` (whose docstring describes every field; ``to_dict()`` is the
    JSON form `hade index --json` prints).
    """
    t0 = time.perf_counter()
    out = Path(out)
    req = _Request(Path(folder), ckpt, IndexSettings.of(settings, **options))
    _check_request(req, out)
    req = dataclasses.replace(req, captions=_read_captions(req.settings.aux_captions),
                              fingerprint=model_fingerprint(ckpt) if ckpt is not None else None)
    with write_lock(out):
        repaired = [f"removed {name}, left by a killed write" for name in clear_index_temps(out)]
        if req.settings.rebuild:
            _wipe(out)
        salvage = set_aside_damaged_db(out)
        if salvage is not None:
            repaired.append(salvage[1])
            req = _after_salvage(out, salvage[0], req)
        store = Store(out, create=True)
        try:
            report = _update(store, req, repaired)
        finally:
            store.close()
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _check_request(req: _Request, out: Path) -> None:
    """Refuse a bad folder, --out or compute dtype before anything is read or written (the model is loaded
    only when something needs encoding, so its compute dtype is checked here; the settings checked
    themselves)."""
    if not req.folder.is_dir():
        raise InputError(f"{req.folder}: not a folder; give the folder of audio files to index")
    check_compute(req.settings.compute, resolve_device(req.settings.device, where="device").type, where="compute")
    claim_output_dir(out, INDEX_OUTPUT, force=req.settings.force)


def _update(store: Store, req: _Request, repaired: list[str]) -> BuildReport:
    """Check (or create) the index in `store`, repair it, and bring it up to date with the folder."""
    meta, settings = store.meta(), req.settings
    if meta.created:
        _check_same_index(store, meta, req)
        repaired += repair_store(store, meta, Path(req.ckpt) if req.ckpt is not None else None)
        _upgrade_codec(store, req)
    else:
        meta = _create(store, req)
    threshold = int(settings.ann_threshold if settings.ann_threshold is not None else
                    meta.ann_threshold if meta.ann_threshold is not None else DEFAULT_THRESHOLD)
    budget = settings.ann_memory_budget if settings.ann_memory_budget is not None else meta.ann_memory_budget
    with store.transaction():
        store.update_meta(ann_threshold=threshold, follow_external_links=settings.follow_external_links,
                          ann_memory_budget=budget)
    store.cleanup(keep_codec=TokenCompression.current_of(store.meta()))
    scanned, skipped = scan_audio(req.folder, exclude=store.root, follow_external_links=settings.follow_external_links)
    files = [(rel, p) for rel, p in scanned if in_shard(rel, settings.shard)]
    builder = Builder(store, req.folder, req.settings, req.captions)
    report = builder.run(files)
    report.skipped = [s for s in skipped if s.path.endswith("/") or in_shard(s.path, settings.shard)]
    report.repaired = repaired
    report.ann = finalize(store, threshold, progress=settings.progress, memory_budget=budget)
    if builder.codec_note is not None and TokenCompression.current_of(store.meta()) is None:
        report.notes.append(builder.codec_note)  # not when finalize fitted it on the float windows of all runs
    report.files, report.windows = store.count_files("ok"), store.count_windows()
    return report


def _after_salvage(out: Path, old: IndexMeta, req: _Request) -> _Request:
    """After a damaged index.sqlite was set aside: the checkpoint to rebuild from (--ckpt, else the intact
    model copy) and the window, hop and storage dtype the old database still shows unless given again."""
    model_dir = out / MODEL_DIR
    ckpt, new_fp = req.ckpt, req.fingerprint
    if ckpt is None:
        from hade.index.integrity import Problem, damaged

        try:
            new_fp = model_fingerprint(model_dir)
        except InputError:
            new_fp = None
        if new_fp is None or (old.fingerprint or new_fp) != new_fp:
            raise damaged(out, Problem(f"{MODEL_DIR}/", "missing or not the model the index was built with, and "
                                       "the database is damaged too", "model"), old)
        ckpt = model_dir
    req = dataclasses.replace(req, ckpt=ckpt, fingerprint=new_fp)
    sr = old.sample_rate
    if old.fingerprint != new_fp or not sr:
        return req
    s = req.settings
    return dataclasses.replace(req, settings=IndexSettings.of(
        s, window=old.window_seconds if s.window is None and old.window_samples else s.window,
        hop=old.hop_seconds if s.hop is None and old.hop_samples else s.hop,
        storage_dtype=s.storage_dtype or old.storage_dtype))


def _check_same_index(store: Store, meta: IndexMeta, req: _Request) -> None:
    """Refuse options that differ from those the existing index was built with."""
    out, folder, settings = store.root, req.folder, req.settings
    if req.fingerprint is not None and req.fingerprint != meta.fingerprint:
        raise InputError(f"{out}: the index was built with model {meta.fingerprint[:12]}…, but --ckpt "
                         f"{req.ckpt} is model {req.fingerprint[:12]}…; use --rebuild to re-index everything with "
                         "the new model, or a new --out")
    if Path(meta.root) != folder.resolve():
        raise InputError(f"{out}: the index holds {meta.root}, not {folder.resolve()}; use --rebuild "
                         "or a new --out")
    if meta.shard != settings.shard:
        raise InputError(f"{out}: the index holds shard {list(meta.shard) if meta.shard else None}, not "
                         f"{settings.shard}; use the same --shard (or --rebuild)")
    for name, value, stored in (("window", settings.window, meta.window_samples),
                                ("hop", settings.hop, meta.hop_samples)):
        if value is not None and seconds_to_samples(value, meta.sample_rate) != stored:
            raise InputError(f"{out}: the index uses --{name} {stored / meta.sample_rate:g} s; "
                             f"use --rebuild to change it")
    if settings.storage_dtype is not None and settings.storage_dtype != meta.storage_dtype:
        raise InputError(f"{out}: the index stores {meta.storage_dtype}; use --rebuild to change it")
    factory = TokenCompression.factory_of(meta)
    if settings.token_codec is not None and settings.token_codec != factory and factory != NO_CODEC:
        raise InputError(f"{out}: the index's token codec is {factory!r}; use --rebuild to change it")


def _upgrade_codec(store: Store, req: _Request) -> None:
    """--token-codec on an index storing float tokens: set the factory; `finalize` compresses the tokens.
    token_codec_min_tokens replaces the index's."""
    state = TokenCompression.requested(store.meta(), req.settings.token_codec, req.settings.token_codec_min_tokens)
    if state is None:
        return
    with store.transaction():
        store.update_meta(token_codec=state)


def _create(store: Store, req: _Request) -> IndexMeta:
    """Start a new index: copy (and record) the model, store the meta; returns the meta."""
    if req.ckpt is None:
        raise InputError(f"{store.root}: a new index needs --ckpt (a checkpoint directory)")
    from hade.checkpoint import read_model_config
    from hade.models.factory import audio_config

    mcfg = read_model_config(req.ckpt)
    acfg = audio_config(mcfg)
    trained = seconds_to_samples(mcfg.clip_seconds, acfg.sample_rate) if mcfg.clip_seconds else None
    w, h = resolve_window(acfg.sample_rate, acfg.max_samples, req.settings.window, req.settings.hop, trained)
    if Path(req.ckpt).resolve() != store.model_dir.resolve():  # not when rebuilding from the model copy itself
        copy_model(req.ckpt, store.model_dir)
    store.record_model()
    s = req.settings
    meta = IndexMeta(schema=SCHEMA_VERSION, fingerprint=req.fingerprint, root=str(req.folder.resolve()),
                     head=mcfg.head, sample_rate=acfg.sample_rate, window_samples=w, hop_samples=h, shard=s.shard,
                     generation=0, storage_dtype=s.storage_dtype or "float16",
                     token_codec=TokenCompression.initial_state(s.token_codec, s.token_codec_min_tokens))
    with store.transaction():
        store.write_meta(meta, ("schema", "fingerprint", "root", "head", "sample_rate", "window_samples",
                                "hop_samples", "shard", "generation", "storage_dtype", "token_codec"))
    return store.meta()


def _read_captions(aux_captions: str | Path | dict[str, str] | None) -> dict[str, str] | None:
    """The caption table of `build_index(aux_captions=)`: a file read by FileCaptioner, or a checked dict."""
    if aux_captions is None:
        return None
    if isinstance(aux_captions, dict):
        bad = [k for k, v in aux_captions.items() if not isinstance(k, str) or not isinstance(v, str) or not v.strip()]
        if bad:
            raise InputError(f"aux_captions: expected {{file: non-empty caption}}, bad entries for {bad[:3]}")
        return {k: v.strip() for k, v in aux_captions.items()}
    from hade.data.captioner import FileCaptioner

    return FileCaptioner(aux_captions).captions
