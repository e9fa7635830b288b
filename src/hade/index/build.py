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

import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hade.config import PRECISIONS
from hade.data.audio import load_audio
from hade.errors import AudioError, InputError
from hade.index.ann import DEFAULT_THRESHOLD
from hade.index.finalize import finalize
from hade.index.repair import remove_stale_temps, repair_store, set_aside_damaged_db
from hade.index.store import (ARRAYS_DIR, DB_FILE, MODEL_DIR, SCHEMA_VERSION, Store, copy_model,
                              model_fingerprint, sha256_file, write_lock)
from hade.index.windows import (in_shard, parse_shard, resolve_window, scan_audio, scan_folder,  # noqa: F401
                                to_numpy, window_bounds)

POOLED_EXTRA_KEY = "_pooled"


@dataclass
class _Job:
    """One file to commit: 'encode' (windows to encode), 'reuse' (copies stored windows), 'error', 'touch'."""

    kind: str
    rel: str
    size: int
    mtime_ns: int
    sha: str | None = None
    error: str | None = None
    duration: float = 0.0
    bounds: list[tuple[int, int]] = field(default_factory=list)
    wave: np.ndarray | None = None
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    done: int = 0
    reuse: list[tuple] = field(default_factory=list)
    aux: str | None = None

    @property
    def complete(self) -> bool:
        return self.kind != "encode" or self.done == len(self.bounds)


def _wipe(out: Path) -> None:
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", "ann.json"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("ann-*.faiss"):
        p.unlink()
    for d in (ARRAYS_DIR, MODEL_DIR):
        shutil.rmtree(out / d, ignore_errors=True)


class _Builder:
    def __init__(self, store: Store, folder: Path, model_dir: Path, window: int, hop: int, batch_size: int,
                 precision: str, device: str, progress: bool, aux_captions: dict[str, str] | None = None,
                 compute: str = "fp32") -> None:
        self.store, self.folder, self.model_dir = store, folder, model_dir
        self.aux, self.compute = aux_captions, compute
        self.window, self.hop, self.batch_size = window, hop, max(1, int(batch_size))
        self.precision, self.device, self.progress = precision, device, progress
        self._model = None
        self.meta = store.meta()
        self.jobs: deque[_Job] = deque()
        self.buffer: list[tuple[_Job, int]] = []
        self.stats: dict[str, Any] = {k: 0 for k in (
            "files_seen", "unchanged_files", "hashed_files", "touched_files", "reused_files", "encoded_files",
            "encoded_windows", "encoder_calls", "removed_files", "commits", "captioned_files",
            "recaptioned_files")}
        self.stats["errors"], self.stats["new_errors"], self.stats["notes"] = [], [], []

    @property
    def model(self):
        if self._model is None:
            from hade.checkpoint import load

            self._model = load(self.model_dir, device=self.device, precision=self.compute)
            if self.aux is not None and not self._model.uses_aux_captions:
                raise InputError(f"--aux-captions: head {self._model.config.head!r} does not use auxiliary "
                                 "captions (only HCI+AC does); index without them")
            if self._model.uses_aux_captions and self.aux is None:
                self.stats["notes"].append(
                    f"head {self._model.config.head!r} uses auxiliary captions, which indexed files do not have: "
                    "new windows are encoded without them, so their search scores come from its audio-caption "
                    "branch only; give a file of generated captions with --aux-captions")
        return self._model

    # ---- encoding ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode(self, items: list[tuple[_Job, int]]) -> None:
        batch = np.zeros((len(items), self.window), dtype=np.float32)
        for i, (job, w) in enumerate(items):
            s, e = job.bounds[w]
            batch[i, :e - s] = job.wave[s:e]
        model = self.model
        aux = [job.aux for job, _ in items]
        reprs = model.encode_audio(torch.from_numpy(batch).to(model.device), aux if any(aux) else None)
        self.stats["encoder_calls"] += 1
        self.stats["encoded_windows"] += len(items)
        if "pooled_key" not in self.meta:
            self._decide_pooled(reprs)
        key = self.meta["pooled_key"]
        if key == POOLED_EXTRA_KEY:
            reprs = {**reprs, key: model.head.pooled_audio(reprs)}
        arrays = to_numpy(reprs, self.precision)
        spec = {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for k, a in arrays.items()}
        if self.meta.setdefault("repr_spec", spec) != spec:
            raise InputError(f"{self.store.root}: the model's representations {spec} differ from the index's "
                             f"{self.meta['repr_spec']}; rebuild with --rebuild")
        for i, (job, _) in enumerate(items):
            job.parts.append({k: a[i:i + 1] for k, a in arrays.items()})
            job.done += 1
            if job.complete:
                job.wave = None

    def _decide_pooled(self, reprs: dict[str, torch.Tensor]) -> None:
        """Which stored key is the pooled embedding for the ANN (None: the head has none, e.g. pure THA)."""
        vec = self.model.head.pooled_audio(reprs)
        if vec is None:
            self.meta["pooled_key"] = None
            return
        same = [k for k, v in reprs.items() if v is vec or (v.shape == vec.shape and torch.equal(v, vec))]
        self.meta["pooled_key"] = same[0] if same else POOLED_EXTRA_KEY

    # ---- committing ----------------------------------------------------------------------------
    def _flush(self, force: bool = False) -> None:
        """Commit the completed jobs at the front of the queue (in path order) in one transaction."""
        ready: list[_Job] = []
        while self.jobs and self.jobs[0].complete:
            ready.append(self.jobs.popleft())
        if not ready:
            return
        encoded = [j for j in ready if j.kind == "encode" and j.parts]
        chunk_id, rows = None, 0
        if encoded:
            parts = [p for j in encoded for p in j.parts]
            arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            rows = len(parts)
            chunk_id = self.store.write_chunk(arrays)
        with self.store.transaction() as c:
            if chunk_id is not None:
                self.store.register_chunk(chunk_id, rows)
            row = 0
            for job in ready:
                if job.kind == "touch":
                    c.execute("UPDATE files SET size=?, mtime_ns=? WHERE path=?", (job.size, job.mtime_ns, job.rel))
                    continue
                old = c.execute("SELECT id FROM files WHERE path=?", (job.rel,)).fetchone()
                if old:
                    c.execute("DELETE FROM windows WHERE file_id=?", (old[0],))
                    c.execute("DELETE FROM files WHERE id=?", (old[0],))
                n = len(job.bounds) if job.kind == "encode" else len(job.reuse)
                fid = c.execute("INSERT INTO files(path, size, mtime_ns, sha256, status, error, duration, num_windows, "
                                "aux_caption) VALUES(?,?,?,?,?,?,?,?,?)",
                                (job.rel, job.size, job.mtime_ns, job.sha, "error" if job.kind == "error" else "ok",
                                 job.error, job.duration, 0 if job.kind == "error" else n,
                                 None if job.kind == "error" else job.aux)).lastrowid
                sr = self.meta["sample_rate"]
                if job.kind == "encode":
                    c.executemany("INSERT INTO windows(file_id, start, end, start_sample, end_sample, chunk, row) "
                                  "VALUES(?,?,?,?,?,?,?)",
                                  [(fid, s / sr, e / sr, s, e, chunk_id, row + i)
                                   for i, (s, e) in enumerate(job.bounds)])
                    row += n
                elif job.kind == "reuse":
                    c.executemany("INSERT INTO windows(file_id, start, end, start_sample, end_sample, chunk, row) "
                                  "VALUES(?,?,?,?,?,?,?)", [(fid, *r) for r in job.reuse])
            self.store.set_meta(**{k: self.meta[k] for k in ("repr_spec", "pooled_key") if k in self.meta})
            self.store.bump_generation()
        self.stats["commits"] += 1

    # ---- the pass ------------------------------------------------------------------------------
    def caption_of(self, rel: str) -> str | None:
        """The auxiliary caption for the file at `rel` (by relative path, else by file name), or None."""
        if not self.aux:
            return None
        return self.aux.get(rel) or self.aux.get(PurePosixPath(rel).name)

    def _recaption(self, rel: str, st: os.stat_result, row: tuple | None) -> _Job | None:
        """An 'encode' job when --aux-captions gives an indexed, readable file another caption than the one
        its windows were encoded with (its bytes are unchanged, so the stored hash is kept)."""
        caption = self.caption_of(rel)
        if self.aux is None or row is None or row[4] != "ok" or caption == row[6]:
            return None
        self.stats["recaptioned_files"] += 1
        return _Job("encode", rel, st.st_size, st.st_mtime_ns, sha=row[3], aux=caption)

    def _classify(self, rel: str, path: Path, known: dict[str, tuple]) -> _Job | None:
        """None for an unchanged file; otherwise the job that brings the store up to date."""
        try:
            st = path.stat()
        except OSError as e:
            self.stats["errors"].append({"path": rel, "reason": f"cannot stat ({e.strerror or e})"})
            return None
        row = known.get(rel)
        if row is not None and row[1] == st.st_size and row[2] == st.st_mtime_ns:
            recaption = self._recaption(rel, st, row)
            if recaption is not None:
                return recaption
            self.stats["unchanged_files"] += 1
            if row[4] == "error":
                self.stats["errors"].append({"path": rel, "reason": row[5]})
            return None
        try:
            sha = sha256_file(path)
        except OSError as e:
            return _Job("error", rel, st.st_size, st.st_mtime_ns, error=f"cannot read ({e.strerror or e})")
        self.stats["hashed_files"] += 1
        if row is not None and row[3] == sha:
            recaption = self._recaption(rel, st, row)
            if recaption is not None:
                return recaption
            self.stats["touched_files"] += 1
            if row[4] == "error":
                self.stats["errors"].append({"path": rel, "reason": row[5]})
            return _Job("touch", rel, st.st_size, st.st_mtime_ns, sha=sha)
        aux = self.caption_of(rel)
        same = self.store.conn.execute("SELECT id, status, error, duration FROM files WHERE sha256=? AND path!=? "
                                       "AND (status='error' OR aux_caption IS ?) ORDER BY id LIMIT 1",
                                       (sha, rel, aux)).fetchone()
        if same is not None:
            self.stats["reused_files"] += 1
            if same[1] == "error":
                return _Job("error", rel, st.st_size, st.st_mtime_ns, sha=sha, error=same[2])
            wins = self.store.conn.execute("SELECT start, end, start_sample, end_sample, chunk, row FROM windows "
                                           "WHERE file_id=? ORDER BY id", (same[0],)).fetchall()
            return _Job("reuse", rel, st.st_size, st.st_mtime_ns, sha=sha, duration=same[3], reuse=wins, aux=aux)
        return _Job("encode", rel, st.st_size, st.st_mtime_ns, sha=sha, aux=aux)

    def run(self, files: list[tuple[str, Path]]) -> dict[str, Any]:
        known = {r[0]: r for r in self.store.conn.execute(
            "SELECT path, size, mtime_ns, sha256, status, error, aux_caption FROM files")}
        self.stats["files_seen"] = len(files)
        if self.aux is not None:
            _ = self.model  # fail early when the head does not use auxiliary captions
        sr = self.meta["sample_rate"]
        bar = tqdm(files, desc="index", unit="file", disable=not self.progress, dynamic_ncols=True)
        for rel, path in bar:
            job = self._classify(rel, path, known)
            if job is None:
                continue
            if job.kind == "encode":
                try:
                    job.wave = load_audio(path, sr)
                except AudioError as e:
                    job = _Job("error", rel, job.size, job.mtime_ns, sha=job.sha, error=getattr(e, "reason", str(e)))
                else:
                    job.duration = len(job.wave) / sr
                    job.bounds = window_bounds(len(job.wave), self.window, self.hop)
                    self.buffer.extend((job, i) for i in range(len(job.bounds)))
                    self.stats["encoded_files"] += 1
                    self.stats["captioned_files"] += job.aux is not None
            if job.kind == "error":
                self.stats["errors"].append({"path": rel, "reason": job.error})
                self.stats["new_errors"].append({"path": rel, "reason": job.error})
            self.jobs.append(job)
            while len(self.buffer) >= self.batch_size:
                self._encode(self.buffer[:self.batch_size])
                del self.buffer[:self.batch_size]
                self._flush()
                bar.set_postfix(windows=self.stats["encoded_windows"], refresh=False)
            if len(self.jobs) >= 512 and not self.buffer:
                self._flush()
        if self.buffer:
            self._encode(self.buffer)
            self.buffer.clear()
        self._flush()
        present = {rel for rel, _ in files}
        gone = [(r[0],) for r in self.store.conn.execute("SELECT path FROM files") if r[0] not in present]
        if gone:
            with self.store.transaction() as c:
                c.executemany("DELETE FROM windows WHERE file_id=(SELECT id FROM files WHERE path=?)", gone)
                c.executemany("DELETE FROM files WHERE path=?", gone)
                self.store.bump_generation()
        self.stats["removed_files"] = len(gone)
        if self.aux is not None:
            self._note_captions(files)
        return self.stats

    def _note_captions(self, files: list[tuple[str, Path]]) -> None:
        """Notes on --aux-captions: indexed files without a caption, and captions that matched no file
        (usually ids in another form than the relative path or file name)."""
        rels = [rel for rel, _ in files]
        used = {rel for rel in rels if self.caption_of(rel) is not None}
        if len(used) < len(rels):
            missing = sorted(set(rels) - used)
            self.stats["notes"].append(f"--aux-captions has no caption for {len(missing)} of {len(rels)} files "
                                       f"(e.g. {missing[:3]}); they are encoded without one")
        names = {PurePosixPath(rel).name for rel in rels}
        unmatched = sorted(k for k in self.aux if k not in used and k not in names)
        if unmatched:
            self.stats["notes"].append(f"--aux-captions: {len(unmatched)} captions match no indexed file by relative "
                                       f"path or file name (e.g. {unmatched[:3]})")


def build_index(folder: str | Path, out: str | Path, ckpt: str | Path | None = None, *, window: float | None = None,
                hop: float | None = None, batch_size: int = 16, ann_threshold: int | None = None,
                shard: str | tuple[int, int] | None = None, rebuild: bool = False, precision: str | None = None,
                device: str = "cpu", progress: bool = True,
                aux_captions: str | Path | dict[str, str] | None = None, compute: str = "fp32",
                follow_external_links: bool = False) -> dict[str, Any]:
    """Index (or bring up to date, repairing damage) the audio files under `folder` into the index `out`.

    ckpt: checkpoint directory; required for a new index, optional afterwards (the index's copy is used).
    window, hop: seconds (default: the model's clip length capped to 10 s, and half of it); fixed at creation.
    shard: 'i/N' to index only the files whose relative-path hash falls in slice i of N (see `merge_indexes`).
    ann_threshold: windows from which the ANN is IVF instead of exact (default: the index's, else 50 000).
    precision: 'float16' (default) or 'float32' storage of the representations; fixed at creation.
    aux_captions: for heads that use auxiliary captions (HCI+AC), a JSON/CSV file of generated captions
    (`hade.data.captioner.FileCaptioner` formats) or a dict, keyed by path relative to `folder` or by file
    name (see the module docstring). A head that does not use them raises InputError.
    compute: encoder precision, "fp32", "bf16" (CPU with AMX/AVX512-BF16, or CUDA) or "fp16" (CUDA); see
    `RetrievalModel.set_inference_precision`. It may differ between runs on the same index.
    follow_external_links: index files that are (or lie in folders that are) symbolic links resolving
    outside `folder`; by default they are skipped and listed in "skipped".
    Returns statistics: files_seen, unchanged_files, hashed_files, touched_files (same bytes, new mtime),
    reused_files (same bytes as another indexed file), encoded_files, encoded_windows, encoder_calls,
    removed_files, captioned_files (encoded with an auxiliary caption), recaptioned_files (re-encoded
    because their caption changed), errors / new_errors ([{path, reason}]), skipped ([{path, reason}],
    external symlinks), repaired (what was damaged and how it was repaired), notes (what the user
    should know, e.g. an unused model branch), files, windows, ann, seconds.
    """
    t0 = time.perf_counter()
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of audio files to index")
    shard_t = parse_shard(shard)
    if compute not in PRECISIONS:  # checked here: the model is loaded only when something needs encoding
        raise InputError(f"--compute must be fp32, bf16 or fp16, got {compute!r}")
    if precision not in (None, "float16", "float32"):
        raise InputError(f"--precision must be float16 or float32, got {precision!r}")
    if out.exists() and not (out / DB_FILE).exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise InputError(f"{out}: exists and is not a hade index; give a new or empty --out folder")
    captions = _read_captions(aux_captions)
    new_fp = model_fingerprint(ckpt) if ckpt is not None else None
    with write_lock(out):
        repaired = [f"removed {name}, left by a killed write" for name in remove_stale_temps(out)]
        if rebuild:
            _wipe(out)
        salvage = set_aside_damaged_db(out)
        if salvage is not None:
            repaired.append(salvage[1])
            ckpt, new_fp, window, hop, precision = _after_salvage(out, salvage[0], ckpt, new_fp, window, hop,
                                                                  precision)
        store = Store(out, create=True)
        try:
            meta = store.meta()
            if "fingerprint" in meta:
                _check_same_index(store, meta, folder, ckpt, new_fp, shard_t, window, hop, precision)
                repaired += repair_store(store, meta, Path(ckpt) if ckpt is not None else None)
            else:
                meta = _create(store, folder, ckpt, new_fp, shard_t, window, hop, precision)
            if ann_threshold is None:
                ann_threshold = int(meta.get("ann_threshold", DEFAULT_THRESHOLD))
            with store.transaction():
                store.set_meta(ann_threshold=int(ann_threshold), follow_external_links=bool(follow_external_links))
            store.cleanup()
            scanned, skipped = scan_audio(folder, exclude=out, follow_external_links=follow_external_links)
            files = [(rel, p) for rel, p in scanned if in_shard(rel, shard_t)]
            builder = _Builder(store, folder, store.model_dir, meta["window_samples"], meta["hop_samples"],
                               batch_size, meta["precision"], device, progress, captions, compute)
            stats = builder.run(files)
            stats["skipped"] = [s for s in skipped if s["path"].endswith("/") or in_shard(s["path"], shard_t)]
            stats["repaired"] = repaired
            stats["ann"] = finalize(store, int(ann_threshold), progress=progress)
            counts = store.conn.execute("SELECT (SELECT COUNT(*) FROM files WHERE status='ok'), "
                                        "(SELECT COUNT(*) FROM windows)").fetchone()
            stats["files"], stats["windows"] = counts
        finally:
            store.close()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _after_salvage(out: Path, old: dict[str, Any], ckpt: str | Path | None, new_fp: str | None,
                   window: float | None, hop: float | None, precision: str | None) -> tuple:
    """After a damaged index.sqlite was set aside: the checkpoint to rebuild from (--ckpt, else the intact
    model copy) and the window, hop and precision the old database still shows unless given again."""
    model_dir = out / MODEL_DIR
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
    sr = old.get("sample_rate")
    if old.get("fingerprint") == new_fp and sr:
        window = old["window_samples"] / sr if window is None and old.get("window_samples") else window
        hop = old["hop_samples"] / sr if hop is None and old.get("hop_samples") else hop
        precision = precision or old.get("precision")
    return ckpt, new_fp, window, hop, precision


def _check_same_index(store: Store, meta: dict[str, Any], folder: Path, ckpt: str | Path | None, new_fp: str | None,
                      shard_t: tuple[int, int] | None, window: float | None, hop: float | None,
                      precision: str | None) -> None:
    """Refuse options that differ from those the existing index was built with."""
    out = store.root
    if new_fp is not None and new_fp != meta["fingerprint"]:
        raise InputError(f"{out}: the index was built with model {meta['fingerprint'][:12]}…, but --ckpt "
                         f"{ckpt} is model {new_fp[:12]}…; use --rebuild to re-index everything with "
                         "the new model, or a new --out")
    if Path(meta["root"]) != folder.resolve():
        raise InputError(f"{out}: the index holds {meta['root']}, not {folder.resolve()}; use --rebuild "
                         "or a new --out")
    if (tuple(meta["shard"]) if meta["shard"] else None) != shard_t:
        raise InputError(f"{out}: the index holds shard {meta['shard']}, not {shard_t}; use the same "
                         "--shard (or --rebuild)")
    for name, value, stored in (("window", window, "window_samples"), ("hop", hop, "hop_samples")):
        if value is not None and int(round(value * meta["sample_rate"])) != meta[stored]:
            raise InputError(f"{out}: the index uses --{name} {meta[stored] / meta['sample_rate']:g} s; "
                             f"use --rebuild to change it")
    if precision is not None and precision != meta["precision"]:
        raise InputError(f"{out}: the index stores {meta['precision']}; use --rebuild to change it")


def _create(store: Store, folder: Path, ckpt: str | Path | None, new_fp: str | None,
            shard_t: tuple[int, int] | None, window: float | None, hop: float | None,
            precision: str | None) -> dict[str, Any]:
    """Start a new index: copy (and record) the model, store the meta; returns the meta."""
    if ckpt is None:
        raise InputError(f"{store.root}: a new index needs --ckpt (a checkpoint directory)")
    from hade.checkpoint import read_model_config
    from hade.models.factory import audio_config

    mcfg = read_model_config(ckpt)
    acfg = audio_config(mcfg)
    trained = int(round(mcfg.clip_seconds * acfg.sample_rate)) if mcfg.clip_seconds else None
    w, h = resolve_window(acfg.sample_rate, acfg.max_samples, window, hop, trained)
    if Path(ckpt).resolve() != store.model_dir.resolve():  # not when rebuilding from the model copy itself
        copy_model(ckpt, store.model_dir)
    store.record_model()
    with store.transaction():
        store.set_meta(schema=SCHEMA_VERSION, fingerprint=new_fp, root=str(folder.resolve()),
                       head=mcfg.head, sample_rate=acfg.sample_rate,
                       window_samples=w, hop_samples=h, precision=precision or "float16",
                       shard=list(shard_t) if shard_t else None, generation=0)
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
