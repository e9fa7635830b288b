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
`follow_external_links` (``--follow-external-links``); it is listed in ``stats["skipped"]``. The choice
is stored in the index meta, and the server hands out external targets only for such an index.

Integrity and repair: every array chunk, the ANN and the model copy are recorded (size, sha256) when
written; a re-run first removes temporaries of killed writes, then checks what was recorded and repairs
damage — re-encoding only the files whose windows lived in a damaged chunk, re-copying a damaged model
copy from --ckpt, rebuilding a damaged ANN, rebuilding from scratch when index.sqlite is unreadable — and
says what it repaired in ``stats["repaired"]`` (see `hade.index.repair`, `hade.index.integrity`).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hade.config import check_compute, check_storage_dtype, seconds_to_samples
from hade.errors import InputError
from hade.index.ann import DEFAULT_THRESHOLD
from hade.index.builder import Builder
from hade.index.compression import NO_CODEC, TokenCompression
from hade.index.finalize import finalize
from hade.index.tokens import check_factory
from hade.index.integrity import has_index_parts
from hade.index.repair import clear_index_temps, repair_store, set_aside_damaged_db
from hade.index.store import (ARRAYS_DIR, DB_FILE, LOCK_FILE, MODEL_DIR, SCHEMA_VERSION, STORAGE_DTYPE_KEY, Store,
                              copy_model, model_fingerprint, write_lock)
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
    """What one `build_index` call asks for: the options an existing index must match (or a new one gets)
    and how to run."""

    folder: Path
    ckpt: str | Path | None
    fingerprint: str | None  # of ckpt
    shard: tuple[int, int] | None
    window: float | None  # seconds
    hop: float | None
    storage_dtype: str | None
    ann_threshold: int | None
    follow_external_links: bool
    batch_size: int
    device: str
    progress: bool
    captions: dict[str, str] | None
    compute: str
    token_codec: str | None = None  # faiss factory or "none"; None: the index's (a new one: the default)
    ann_memory_budget: int | None = None  # bytes; None: the index's (a new one: no budget)
    force: bool = False  # write into a non-empty folder that is not an index
    token_codec_min_tokens: int | None = None  # None: the index's (a new one: what the factory needs)


def build_index(folder: str | Path, out: str | Path, ckpt: str | Path | None = None, *, window: float | None = None,
                hop: float | None = None, batch_size: int = 16, ann_threshold: int | None = None,
                shard: str | tuple[int, int] | None = None, rebuild: bool = False, storage_dtype: str | None = None,
                device: str = "cpu", progress: bool = True,
                aux_captions: str | Path | dict[str, str] | None = None, compute: str = "fp32",
                follow_external_links: bool = False, precision: str | None = None,
                token_codec: str | None = None, ann_memory_budget: int | None = None,
                force: bool = False, token_codec_min_tokens: int | None = None) -> dict[str, Any]:
    """Index (or bring up to date, repairing damage) the audio files under `folder` into the index `out`.

    ckpt: checkpoint directory; required for a new index, optional afterwards (the index's copy is used).
    window, hop: seconds (default: the model's clip length capped to 10 s, and half of it); fixed at creation.
    shard: 'i/N' to index only the files whose relative-path hash falls in slice i of N (see `merge_indexes`).
    ann_threshold: windows from which the ANN is IVF instead of exact (default: the index's, else 50 000).
    storage_dtype: 'float16' (default) or 'float32' storage of the representations; fixed at creation.
    precision: the old name of storage_dtype, deprecated (accepted with a DeprecationWarning for one release).
    aux_captions: for heads that use auxiliary captions (HCI+AC), a JSON/CSV file of generated captions
    (`hade.data.captioner.FileCaptioner` formats) or a dict, keyed by path relative to `folder` or by file
    name (see the module docstring). A head that does not use them raises InputError.
    compute: encoder autocast, "fp32", "bf16" (CPU with AMX/AVX512-BF16, or CUDA) or "fp16" (CUDA); see
    `RetrievalModel.set_compute`. It may differ between runs on the same index.
    follow_external_links: index files that are (or lie in folders that are) symbolic links resolving
    outside `folder`; by default they are skipped and listed in "skipped".
    token_codec: how token features (THA's audio tokens) are stored: a faiss codec factory or "none" (float,
    the storage dtype). The default for a new index, "OPQ32,IVF256,PQ32", keeps 8 dims a sub-quantiser at
    every token width (OPQ<d/8>,IVF256,PQ<d/8>): 35 bytes a token at 256 dims instead of 512 in float16,
    67 bytes a token at 512 dims instead of 1024 (`hade.index.tokens.code_bytes_for`). Fixed at creation,
    except that an index storing float tokens (e.g. one written before token codecs) can be given one: its
    stored tokens are then compressed (`hade.index.compression`).
    token_codec_min_tokens: the fewest non-zero tokens of each token key the codec is fitted on; until
    the index has them its tokens are stored as float, and the run that gets there fits the codec and
    compresses them (default: what the factory needs to train well, 9 984 for the default's 256-centroid
    k-means; 0 fits on whatever faiss can train on, as before deferral). Kept in the index; given again,
    it replaces the kept value (it matters only until the codec is fitted).
    ann_memory_budget: bytes the ANN may take (default: the index's, else none): an IVF whose 8-bit codes
    would exceed it is built with product-quantised codes instead (`hade.index.ann.choose_ivfpq`).
    force: write the index into `out` even when it is a non-empty folder that is not an index (InputError
    otherwise; its files are left alone).
    Returns statistics: files_seen, unchanged_files, hashed_files, touched_files (same bytes, new mtime),
    reused_files (same bytes as another indexed file), encoded_files, encoded_windows, encoder_calls,
    removed_files, captioned_files (encoded with an auxiliary caption), recaptioned_files (re-encoded
    because their caption changed), errors / new_errors ([{path, reason}]), skipped ([{path, reason}],
    external symlinks), repaired (what was damaged and how it was repaired), notes (what the user
    should know, e.g. an unused model branch), files, windows, ann, seconds.
    """
    t0 = time.perf_counter()
    out = Path(out)
    req = _Request(folder=Path(folder), ckpt=ckpt, fingerprint=None, shard=parse_shard(shard), window=window, hop=hop,
                   storage_dtype=_storage_dtype_arg(storage_dtype, precision), ann_threshold=ann_threshold,
                   follow_external_links=bool(follow_external_links), batch_size=batch_size, device=device,
                   progress=progress, captions=None, compute=compute, token_codec=token_codec,
                   ann_memory_budget=ann_memory_budget, force=force, token_codec_min_tokens=token_codec_min_tokens)
    _check_request(req, out)
    req = dataclasses.replace(req, captions=_read_captions(aux_captions),
                              fingerprint=model_fingerprint(ckpt) if ckpt is not None else None)
    with write_lock(out):
        repaired = [f"removed {name}, left by a killed write" for name in clear_index_temps(out)]
        if rebuild:
            _wipe(out)
        salvage = set_aside_damaged_db(out)
        if salvage is not None:
            repaired.append(salvage[1])
            req = _after_salvage(out, salvage[0], req)
        store = Store(out, create=True)
        try:
            stats = _update(store, req, repaired)
        finally:
            store.close()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _storage_dtype_arg(storage_dtype: str | None, precision: str | None) -> str | None:
    """`storage_dtype`, or the value of its deprecated old name `precision`."""
    if precision is None:
        return storage_dtype
    warnings.warn("build_index(precision=) is now storage_dtype=; precision= goes away in the next release",
                  DeprecationWarning, stacklevel=3)
    if storage_dtype is not None and storage_dtype != precision:
        raise InputError(f"storage_dtype={storage_dtype!r} and its old name precision={precision!r} disagree; "
                         "give storage_dtype only")
    return precision


def _check_request(req: _Request, out: Path) -> None:
    """Refuse bad options before anything is read or written (the model is loaded only when something
    needs encoding, so its compute dtype is checked here)."""
    if not req.folder.is_dir():
        raise InputError(f"{req.folder}: not a folder; give the folder of audio files to index")
    check_compute(req.compute, resolve_device(req.device, where="device").type, where="compute")
    if req.storage_dtype is not None:
        check_storage_dtype(req.storage_dtype, where="storage_dtype")
    if req.token_codec is not None:
        check_factory(req.token_codec, where="token_codec")
    if req.token_codec_min_tokens is not None and (isinstance(req.token_codec_min_tokens, bool) or not isinstance(
            req.token_codec_min_tokens, int) or req.token_codec_min_tokens < 0):
        raise InputError(f"token_codec_min_tokens={req.token_codec_min_tokens!r}: expected a number of tokens >= 0")
    if req.ann_memory_budget is not None and req.ann_memory_budget <= 0:
        raise InputError(f"ann_memory_budget={req.ann_memory_budget}: expected a positive number of bytes")
    claim_output_dir(out, INDEX_OUTPUT, force=req.force)


def _update(store: Store, req: _Request, repaired: list[str]) -> dict[str, Any]:
    """Check (or create) the index in `store`, repair it, and bring it up to date with the folder."""
    meta = store.meta()
    if "fingerprint" in meta:
        _check_same_index(store, meta, req)
        repaired += repair_store(store, meta, Path(req.ckpt) if req.ckpt is not None else None)
        _upgrade_codec(store, req)
    else:
        meta = _create(store, req)
    threshold = int(req.ann_threshold if req.ann_threshold is not None else meta.get("ann_threshold",
                                                                                     DEFAULT_THRESHOLD))
    budget = req.ann_memory_budget if req.ann_memory_budget is not None else meta.get("ann_memory_budget")
    with store.transaction():
        store.set_meta(ann_threshold=threshold, follow_external_links=req.follow_external_links,
                       ann_memory_budget=budget)
    store.cleanup()
    scanned, skipped = scan_audio(req.folder, exclude=store.root, follow_external_links=req.follow_external_links)
    files = [(rel, p) for rel, p in scanned if in_shard(rel, req.shard)]
    builder = Builder(store, req.folder, store.model_dir, meta["window_samples"], meta["hop_samples"],
                      req.batch_size, meta[STORAGE_DTYPE_KEY], req.device, req.progress, req.captions, req.compute)
    stats = builder.run(files)
    stats["skipped"] = [s for s in skipped if s["path"].endswith("/") or in_shard(s["path"], req.shard)]
    stats["repaired"] = repaired
    stats["ann"] = finalize(store, threshold, progress=req.progress, memory_budget=budget)
    if builder.codec_note is not None and (store.meta().get("token_codec") or {}).get("current") is None:
        stats["notes"].append(builder.codec_note)  # not when finalize fitted it on the float windows of all runs
    stats["files"], stats["windows"] = store.count_files("ok"), store.count_windows()
    return stats


def _after_salvage(out: Path, old: dict[str, Any], req: _Request) -> _Request:
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
        if new_fp is None or old.get("fingerprint", new_fp) != new_fp:
            raise damaged(out, Problem(f"{MODEL_DIR}/", "missing or not the model the index was built with, and "
                                       "the database is damaged too", "model"), old)
        ckpt = model_dir
    req = dataclasses.replace(req, ckpt=ckpt, fingerprint=new_fp)
    sr = old.get("sample_rate")
    if old.get("fingerprint") != new_fp or not sr:
        return req
    return dataclasses.replace(
        req, window=old["window_samples"] / sr if req.window is None and old.get("window_samples") else req.window,
        hop=old["hop_samples"] / sr if req.hop is None and old.get("hop_samples") else req.hop,
        storage_dtype=req.storage_dtype or old.get(STORAGE_DTYPE_KEY))


def _check_same_index(store: Store, meta: dict[str, Any], req: _Request) -> None:
    """Refuse options that differ from those the existing index was built with."""
    out, folder = store.root, req.folder
    if req.fingerprint is not None and req.fingerprint != meta["fingerprint"]:
        raise InputError(f"{out}: the index was built with model {meta['fingerprint'][:12]}…, but --ckpt "
                         f"{req.ckpt} is model {req.fingerprint[:12]}…; use --rebuild to re-index everything with "
                         "the new model, or a new --out")
    if Path(meta["root"]) != folder.resolve():
        raise InputError(f"{out}: the index holds {meta['root']}, not {folder.resolve()}; use --rebuild "
                         "or a new --out")
    if (tuple(meta["shard"]) if meta["shard"] else None) != req.shard:
        raise InputError(f"{out}: the index holds shard {meta['shard']}, not {req.shard}; use the same "
                         "--shard (or --rebuild)")
    for name, value, stored in (("window", req.window, "window_samples"), ("hop", req.hop, "hop_samples")):
        if value is not None and seconds_to_samples(value, meta["sample_rate"]) != meta[stored]:
            raise InputError(f"{out}: the index uses --{name} {meta[stored] / meta['sample_rate']:g} s; "
                             f"use --rebuild to change it")
    if req.storage_dtype is not None and req.storage_dtype != meta[STORAGE_DTYPE_KEY]:
        raise InputError(f"{out}: the index stores {meta[STORAGE_DTYPE_KEY]}; use --rebuild to change it")
    factory = (meta.get("token_codec") or {}).get("factory", NO_CODEC)
    if req.token_codec is not None and req.token_codec != factory and factory != NO_CODEC:
        raise InputError(f"{out}: the index's token codec is {factory!r}; use --rebuild to change it")


def _upgrade_codec(store: Store, req: _Request) -> None:
    """--token-codec on an index storing float tokens: set the factory; `finalize` compresses the tokens.
    token_codec_min_tokens replaces the index's."""
    meta = store.meta()
    tc = meta.get("token_codec") or {}
    min_tokens = req.token_codec_min_tokens if req.token_codec_min_tokens is not None else tc.get("min_tokens")
    if req.token_codec is not None and req.token_codec != tc.get("factory", NO_CODEC):
        tc = {**TokenCompression.initial_meta(req.token_codec, min_tokens), "keys": None}
    elif tc and min_tokens != tc.get("min_tokens"):
        tc = {**tc, "min_tokens": min_tokens}
    else:
        return
    with store.transaction():
        store.set_meta(token_codec=tc)


def _create(store: Store, req: _Request) -> dict[str, Any]:
    """Start a new index: copy (and record) the model, store the meta; returns the meta."""
    if req.ckpt is None:
        raise InputError(f"{store.root}: a new index needs --ckpt (a checkpoint directory)")
    from hade.checkpoint import read_model_config
    from hade.models.factory import audio_config

    mcfg = read_model_config(req.ckpt)
    acfg = audio_config(mcfg)
    trained = seconds_to_samples(mcfg.clip_seconds, acfg.sample_rate) if mcfg.clip_seconds else None
    w, h = resolve_window(acfg.sample_rate, acfg.max_samples, req.window, req.hop, trained)
    if Path(req.ckpt).resolve() != store.model_dir.resolve():  # not when rebuilding from the model copy itself
        copy_model(req.ckpt, store.model_dir)
    store.record_model()
    with store.transaction():
        store.set_meta(schema=SCHEMA_VERSION, fingerprint=req.fingerprint, root=str(req.folder.resolve()),
                       head=mcfg.head, sample_rate=acfg.sample_rate, window_samples=w, hop_samples=h,
                       shard=list(req.shard) if req.shard else None, generation=0,
                       token_codec=TokenCompression.initial_meta(req.token_codec, req.token_codec_min_tokens),
                       **{STORAGE_DTYPE_KEY: req.storage_dtype or "float16"})
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
