"""The pass of `hade index` over a folder's files: classify each file against the store (unchanged,
touched, recaptioned, same bytes as an indexed file, new), encode new windows in batches, and commit
completed files in path order after every batch (see `hade.index.build` for the whole command)."""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm.auto import tqdm

from hade.data.audio import stream_audio
from hade.errors import AudioError, InputError
from hade.index.report import BuildReport, FileProblem
from hade.index.settings import IndexSettings
from hade.index.compression import TokenCompression
from hade.index.store import FileRecord, Store, WindowRecord, sha256_file
from hade.index.windows import StreamWindows, to_numpy, window_batch

POOLED_EXTRA_KEY = "_pooled"
FLUSH_JOBS = 512  # files queued (none waiting for the encoder) before they are committed anyway


@dataclass
class Job:
    """One file to commit: 'encode' (windows to encode), 'reuse' (copies stored windows), 'error', 'touch'."""

    kind: str
    rel: str
    size: int
    mtime_ns: int
    sha: str | None = None
    error: str | None = None
    duration: float = 0.0
    bounds: list[tuple[int, int]] = field(default_factory=list)
    pieces: dict[int, np.ndarray] = field(default_factory=dict)  # samples of windows cut, not yet encoded
    loaded: bool = True  # False while its file is still being decoded (more windows may come)
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    done: int = 0
    reuse: list[WindowRecord] = field(default_factory=list)
    aux: str | None = None

    @property
    def complete(self) -> bool:
        return self.kind != "encode" or (self.loaded and self.done == len(self.bounds))

    def record(self) -> FileRecord:
        """The file's row (a new id) for an 'encode', 'reuse' or 'error' job."""
        if self.kind == "error":
            return FileRecord(None, self.rel, self.size, self.mtime_ns, self.sha, "error", self.error, self.duration,
                              0, None)
        n = len(self.bounds) if self.kind == "encode" else len(self.reuse)
        return FileRecord(None, self.rel, self.size, self.mtime_ns, self.sha, "ok", self.error, self.duration, n,
                          self.aux)

    def windows(self, file_id: int, sample_rate: int, chunk_id: int | None, first_row: int) -> list[WindowRecord]:
        """The job's windows for file `file_id`: encoded ones at rows first_row.. of `chunk_id`, or copies of
        the reused file's windows (same chunk rows)."""
        if self.kind == "encode":
            return [WindowRecord(file_id, s / sample_rate, e / sample_rate, s, e, chunk_id, first_row + i)
                    for i, (s, e) in enumerate(self.bounds)]
        if self.kind == "reuse":
            return [w._replace(file_id=file_id, id=None) for w in self.reuse]
        return []


class Builder:
    """One pass of `hade index` over a list of files into an open store (`run`); the model is loaded on
    first use, so a pass with nothing to encode never loads it."""

    def __init__(self, store: Store, folder: Path, settings: IndexSettings,
                 aux_captions: dict[str, str] | None = None) -> None:
        """`store`: a created index (its window, hop, rate and storage dtype are used); `settings`: how to
        run (batch_size, device, compute, progress); `aux_captions`: the caption table, if any."""
        meta = store.meta()
        self.store, self.folder, self.model_dir = store, folder, store.model_dir
        self.aux, self.compute = aux_captions, settings.compute
        self.window, self.hop, self.batch_size = meta.window_samples, meta.hop_samples, settings.batch_size
        self.storage_dtype, self.device, self.progress = meta.storage_dtype, settings.device, settings.progress
        self._model = None
        self.sample_rate: int = meta.sample_rate
        # the representations, decided by the first encoded window of a new index
        self.reprs_known, self.repr_spec, self.pooled_key = meta.reprs_known, meta.repr_spec, meta.pooled_key
        self.compression = TokenCompression(store, meta)
        self.codec_note: str | None = None  # why this run stored float tokens (`finalize` may still fit the codec)
        self.jobs: deque[Job] = deque()
        self.buffer: list[tuple[Job, int]] = []
        self.report = BuildReport()  # counted into as the pass goes; `build_index` completes it

    @property
    def model(self):
        if self._model is None:
            from hade.checkpoint import load

            self._model = load(self.model_dir, device=self.device, compute=self.compute)
            if self.aux is not None and not self._model.uses_aux_captions:
                raise InputError(f"--aux-captions: head {self._model.config.head!r} does not use auxiliary "
                                 "captions (only HCI+AC does); index without them")
            if self._model.uses_aux_captions and self.aux is None:
                self.report.notes.append(
                    f"head {self._model.config.head!r} uses auxiliary captions, which indexed files do not have: "
                    "new windows are encoded without them, so their search scores come from its audio-caption "
                    "branch only; give a file of generated captions with --aux-captions")
        return self._model

    # ---- encoding ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode(self, items: list[tuple[Job, int]]) -> None:
        """Encode one batch of (job, window number) and keep each window's arrays ([1, ...] per key) in its job."""
        batch = window_batch([job.pieces.pop(w) for job, w in items], self.window)
        model = self.model
        aux = [job.aux for job, _ in items]
        reprs = model.encode_audio(torch.from_numpy(batch).to(model.device), aux if any(aux) else None)
        self.report.encoder_calls += 1
        self.report.encoded_windows += len(items)
        if not self.reprs_known:
            self._decide_pooled(reprs)
        key = self.pooled_key
        if key == POOLED_EXTRA_KEY:
            reprs = {**reprs, key: model.head.pooled_audio(reprs)}
        arrays = to_numpy(reprs, self.storage_dtype)
        spec = {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for k, a in arrays.items()}
        if not self.reprs_known:
            self.repr_spec, self.reprs_known = spec, True
        if self.repr_spec != spec:
            raise InputError(f"{self.store.root}: the model's representations {spec} differ from the index's "
                             f"{self.repr_spec}; rebuild with --rebuild")
        for i, (job, _) in enumerate(items):
            job.parts.append({k: a[i:i + 1] for k, a in arrays.items()})
            job.done += 1

    def _decide_pooled(self, reprs: dict[str, torch.Tensor]) -> None:
        """Which stored key is the pooled embedding for the ANN (None: the head has none, e.g. pure THA)."""
        vec = self.model.head.pooled_audio(reprs)
        if vec is None:
            self.pooled_key = None
            return
        same = [k for k, v in reprs.items() if v is vec or (v.shape == vec.shape and torch.equal(v, vec))]
        self.pooled_key = same[0] if same else POOLED_EXTRA_KEY

    # ---- committing ----------------------------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        """Commit the completed jobs at the front of the queue (in path order) in one transaction, after
        writing the arrays of their encoded windows as one chunk. A new index whose token codec is still
        to be fitted holds them back until they have the windows it is fitted on (`TokenCompression.fit_windows`)
        or the folder ends."""
        n = 0
        while n < len(self.jobs) and self.jobs[n].complete:
            n += 1
        if not n or (not final and self._hold_for_codec(n)):
            return
        ready = [self.jobs.popleft() for _ in range(n)]
        chunk_id, rows, codec_id = self._write_chunk(ready)
        with self.store.transaction():
            if chunk_id is not None:
                self.store.register_chunk(chunk_id, rows, codec_id)
            row = 0
            for job in ready:
                row += self._commit(job, chunk_id, row)
            if self.reprs_known:
                self.store.update_meta(repr_spec=self.repr_spec, pooled_key=self.pooled_key)
            self.store.update_meta(token_codec=self.compression.state())
            self.store.bump_generation()
        self.report.commits += 1

    def _hold_for_codec(self, ready: int) -> bool:
        """Whether the first `ready` jobs wait for more windows to fit the token codec on."""
        if not self.compression.waiting(self.repr_spec, self.pooled_key):
            return False
        held = sum(len(self.jobs[i].parts) for i in range(ready))
        return held < self.compression.fit_windows(self.repr_spec)

    def _write_chunk(self, ready: list[Job]) -> tuple[int | None, int, str | None]:
        """(chunk id, rows, codec set id) of the arrays of the encoded windows of `ready`, written as one
        chunk in job order, token keys encoded with the index's codec (fitted here on a new index's first
        chunk); (None, 0, None) when there are none."""
        parts = [p for job in ready if job.kind == "encode" for p in job.parts]
        if not parts:
            return None, 0, None
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.compression.waiting(self.repr_spec, self.pooled_key):
            self.codec_note = self.compression.fit(arrays, progress=self.progress)
        arrays, codec_id = self.compression.encode(arrays)
        return self.store.write_chunk(arrays), len(parts), codec_id

    def _commit(self, job: Job, chunk_id: int | None, row: int) -> int:
        """Bring the store's record of one file up to date (inside the transaction); returns the chunk rows
        its encoded windows took, from `row` on."""
        if job.kind == "touch":
            self.store.touch_file(job.rel, job.size, job.mtime_ns)
            return 0
        self.store.remove_files([job.rel])
        file_id = self.store.add_file(job.record())
        self.store.put_windows(job.windows(file_id, self.sample_rate, chunk_id, row))
        return len(job.bounds) if job.kind == "encode" else 0

    # ---- the pass ------------------------------------------------------------------------------
    def caption_of(self, rel: str) -> str | None:
        """The auxiliary caption for the file at `rel` (by relative path, else by file name), or None."""
        if not self.aux:
            return None
        return self.aux.get(rel) or self.aux.get(PurePosixPath(rel).name)

    def _recaption(self, rel: str, st: os.stat_result, known: FileRecord | None) -> Job | None:
        """An 'encode' job when --aux-captions gives an indexed, readable file another caption than the one
        its windows were encoded with (its bytes are unchanged, so the stored hash is kept)."""
        caption = self.caption_of(rel)
        if self.aux is None or known is None or known.status != "ok" or caption == known.aux_caption:
            return None
        self.report.recaptioned_files += 1
        return Job("encode", rel, st.st_size, st.st_mtime_ns, sha=known.sha256, aux=caption)

    def _keep(self, known: FileRecord) -> None:
        """A file whose stored record stands: an unreadable one stays listed among the errors."""
        if known.status == "error":
            self.report.errors.append(FileProblem(known.path, known.error))

    def _classify(self, rel: str, path: Path, known: dict[str, FileRecord]) -> Job | None:
        """None for an unchanged file; otherwise the job that brings the store up to date."""
        try:
            st = path.stat()
        except OSError as e:
            self.report.errors.append(FileProblem(rel, f"cannot stat ({e.strerror or e})"))
            return None
        rec = known.get(rel)
        if rec is not None and (rec.size, rec.mtime_ns) == (st.st_size, st.st_mtime_ns):
            if (job := self._recaption(rel, st, rec)) is None:
                self.report.unchanged_files += 1
                self._keep(rec)
            return job
        try:
            sha = sha256_file(path)
        except OSError as e:
            return Job("error", rel, st.st_size, st.st_mtime_ns, error=f"cannot read ({e.strerror or e})")
        self.report.hashed_files += 1
        if rec is not None and rec.sha256 == sha:
            if (job := self._recaption(rel, st, rec)) is None:
                self.report.touched_files += 1
                self._keep(rec)
                job = Job("touch", rel, st.st_size, st.st_mtime_ns, sha=sha)
            return job
        return self._by_content(rel, st, sha)

    def _by_content(self, rel: str, st: os.stat_result, sha: str) -> Job:
        """A file with new bytes: 'reuse' (or 'error') when another indexed file has the same bytes, else
        'encode'."""
        aux = self.caption_of(rel)
        same = self.store.same_content(sha, rel, aux)
        if same is None:
            return Job("encode", rel, st.st_size, st.st_mtime_ns, sha=sha, aux=aux)
        self.report.reused_files += 1
        if same.status == "error":
            return Job("error", rel, st.st_size, st.st_mtime_ns, sha=sha, error=same.error)
        return Job("reuse", rel, st.st_size, st.st_mtime_ns, sha=sha, duration=same.duration,
                   reuse=self.store.file_windows(same.id), aux=aux)

    def _load(self, job: Job, path: Path, bar: tqdm) -> None:
        """Decode a queued 'encode' job's file block by block (`stream_audio`), queueing its windows as they
        are cut and encoding every full batch as it fills, so that memory does not grow with the file's
        length; the job becomes an 'error' job when the file cannot be decoded."""
        windows = StreamWindows(self.window, self.hop)
        job.loaded = False
        try:
            for block in stream_audio(path, self.sample_rate):
                self._queue(job, windows.feed(block))
                self._drain(bar)
            self._queue(job, windows.finish())
        except AudioError as e:
            self.buffer = [(j, w) for j, w in self.buffer if j is not job]
            job.kind, job.error = "error", getattr(e, "reason", str(e))
            job.bounds, job.pieces, job.parts, job.done = [], {}, [], 0
        else:
            job.duration = windows.total / self.sample_rate
            self.report.encoded_files += 1
            self.report.captioned_files += job.aux is not None
        job.loaded = True

    def _queue(self, job: Job, windows: list[tuple[tuple[int, int], np.ndarray]]) -> None:
        for bounds, samples in windows:
            job.pieces[len(job.bounds)] = samples
            self.buffer.append((job, len(job.bounds)))
            job.bounds.append(bounds)

    def _drain(self, bar: tqdm, final: bool = False) -> None:
        """Encode every full batch of queued windows (and, when `final`, the rest) and commit what is done."""
        while len(self.buffer) >= self.batch_size or (final and self.buffer):
            self._encode(self.buffer[:self.batch_size])
            del self.buffer[:self.batch_size]
            self._flush()
            bar.set_postfix(windows=self.report.encoded_windows, refresh=False)
        if final or (len(self.jobs) >= FLUSH_JOBS and not self.buffer):
            self._flush(final)

    def run(self, files: list[tuple[str, Path]]) -> BuildReport:
        """One pass over `files` ((relative path, path) in path order): hash, encode or reuse what changed,
        commit as it goes, then drop the files that are gone. Returns the report, its counts and problems
        filled in (the rest is `build_index`'s)."""
        known = {rec.path: rec for rec in self.store.files()}
        self.report.files_seen = len(files)
        if self.aux is not None:
            _ = self.model  # fail early when the head does not use auxiliary captions
        bar = tqdm(files, desc="index", unit="file", disable=not self.progress, dynamic_ncols=True)
        for rel, path in bar:
            job = self._classify(rel, path, known)
            if job is None:
                continue
            self.jobs.append(job)
            if job.kind == "encode":
                self._load(job, path, bar)
            if job.kind == "error":
                self.report.errors.append(FileProblem(rel, job.error))
                self.report.new_errors.append(FileProblem(rel, job.error))
            self._drain(bar)
        self._drain(bar, final=True)
        self._remove_gone({rel for rel, _ in files})
        if self.aux is not None:
            self._note_captions(files)
        return self.report

    def _remove_gone(self, present: set[str]) -> None:
        """Delete the stored files whose relative paths are not in `present` (deleted or moved away)."""
        gone = [rec.path for rec in self.store.files() if rec.path not in present]
        if gone:
            with self.store.transaction():
                self.store.remove_files(gone)
                self.store.bump_generation()
        self.report.removed_files = len(gone)

    def _note_captions(self, files: list[tuple[str, Path]]) -> None:
        """Notes on --aux-captions: indexed files without a caption, and captions that matched no file
        (usually ids in another form than the relative path or file name)."""
        rels = [rel for rel, _ in files]
        used = {rel for rel in rels if self.caption_of(rel) is not None}
        if len(used) < len(rels):
            missing = sorted(set(rels) - used)
            self.report.notes.append(f"--aux-captions has no caption for {len(missing)} of {len(rels)} files "
                                     f"(e.g. {missing[:3]}); they are encoded without one")
        names = {PurePosixPath(rel).name for rel in rels}
        unmatched = sorted(k for k in self.aux if k not in used and k not in names)
        if unmatched:
            self.report.notes.append(f"--aux-captions: {len(unmatched)} captions match no indexed file by relative "
                                     f"path or file name (e.g. {unmatched[:3]})")
