"""The search engine behind `hade serve`: one index, prioritised model use, JSON-ready results.

The web layer (:mod:`hade.serve.app`) only validates requests and maps the exceptions raised here to
HTTP codes: :class:`NotFound` -> 404, :class:`~hade.errors.StaleFile` -> 404
(missing) or 409 (changed, outside the indexed folder), :class:`~hade.errors.IndexDamaged` -> 503,
:class:`~hade.errors.InputError` (bad audio, empty text, ...) -> 400.

Model use goes through `PriorityLock` (hade.serve.concurrency): an audio query runs on the audio pool
(lower CPU priority) and the index takes the lock at LOW priority around each batch of its windows
(`guard=`); a text query holds it at HIGH priority for its whole (short) search, so it waits for at
most one audio batch.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, ContextManager, Protocol

import numpy as np
import torch

from hade.errors import InputError
from hade.index.info import IndexInfo
from hade.index.integrity import Health
from hade.serve.concurrency import HIGH, LOW, PriorityLock, lower_thread_priority, release_memory
from hade.serve.explaining import ExplainQuery, explain_note, maps_payload
from hade.serve.limits import AUDIO_QUERY_CACHE, MAX_K, MAX_QUERY_CHARS, MAX_QUERY_SECONDS, MAX_UPLOAD_BYTES, Limits
from hade.serve.peaks import PeakCache, Peaks, compute_peaks
from hade.serve.status import health_body, model_fingerprint
from hade.serve.upload import decode_upload
from hade.utils.jsonable import jsonable

log = logging.getLogger("hade.serve")

# Media types for the containers hade decodes (mimetypes guesses some of these badly, e.g. audio/x-wav).
MEDIA_TYPES: dict[str, str] = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
    ".aifc": "audio/aiff", ".au": "audio/basic", ".snd": "audio/basic", ".caf": "audio/x-caf",
    ".w64": "audio/x-w64", ".rf64": "audio/x-rf64",
    # FFmpeg containers (hade.data.av_audio); browsers play the MP4 and WebM ones in an <audio> element
    ".m4a": "audio/mp4", ".m4b": "audio/mp4", ".mp4": "audio/mp4", ".mov": "video/quicktime", ".aac": "audio/aac",
    ".webm": "audio/webm", ".mka": "audio/x-matroska", ".mkv": "video/x-matroska",
}


class IndexLike(Protocol):
    """What the server needs from `hade.index.Index` (duck-typed so tests can use a fake)."""

    model: Any

    def search(self, query: Any, k: int = 10, candidates: int = 100, per_file: bool = False, *,
               guard: Callable[[], ContextManager[Any]] | None = None,
               timing: dict[str, float] | None = None) -> list[Any]:
        """Every model call of the search runs inside `with guard():` (and nothing else does); `timing`
        (given only for text queries that ask for it) receives milliseconds per phase."""
    def get(self, id: int) -> Any: ...
    def open_audio(self, id: int) -> tuple[BinaryIO, os.stat_result]:
        """The verified, opened indexed file of window `id` and its fstat. KeyError for an unknown id;
        StaleFile('missing' | 'changed' | 'outside') when it is not the file that was indexed."""
    def audio_path(self, id: int) -> Path: ...
    def window_audio(self, id: int) -> np.ndarray: ...
    def query_vector(self, query: Any, *, guard: Callable[[], ContextManager[Any]] | None = None,
                     audio_batch: int = 4) -> Any:
        """An audio query's vector (`hade.index.QueryVector`), to `search` with and keep (model calls
        inside `guard`, `audio_batch` windows each)."""
    def file_scores(self, id: int, query: Any, *, guard: Callable[[], ContextManager[Any]] | None = None
                    ) -> tuple[list[Any], np.ndarray]:
        """Every window of window `id`'s file in time order, and the query's scores [W] from stored vectors."""
    def info(self) -> IndexInfo: ...
    def health(self) -> Health:
        """The quick check (ok, or the damaged files and the repair command); cheap, never raises."""
    def __len__(self) -> int: ...


class NotFound(LookupError):
    """No window with that id (or its audio file is gone)."""


def media_type(path: str | Path) -> str:
    """Content type of an audio file by extension (application/octet-stream when unknown)."""
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def decode_audio_bytes(data: bytes, sample_rate: int, max_seconds: float = MAX_QUERY_SECONDS) -> np.ndarray:
    """Decode an uploaded clip -> float32 mono [T] at `sample_rate` (see `hade.serve.upload.decode_upload`)."""
    return decode_upload(data, sample_rate, max_seconds)


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


class SearchService:
    """Wraps an index: validated ids, prioritised model use, bounded audio work, JSON-ready dicts."""

    def __init__(self, index: IndexLike, max_upload_bytes: int | None = None, candidates: int = 100,
                 limits: Limits | None = None) -> None:
        self.index = index
        self.limits = limits or Limits()
        self.max_upload_bytes = int(max_upload_bytes if max_upload_bytes is not None else self.limits.max_upload_bytes)
        self.candidates = int(candidates)
        # One model, one user at a time; text queries (HIGH) overtake the batches of audio queries (LOW).
        self.model_lock = PriorityLock()
        # Audio uploads are decoded + encoded on their own threads (max_audio_active), at a lower CPU
        # priority, so a text query's threads get a core at once even while an upload is encoded; the
        # audio lane (app.py) bounds how many wait for them.
        self.audio_pool = ThreadPoolExecutor(self.limits.max_audio_active, thread_name_prefix="hade-audio",
                                             initializer=_audio_thread_init)
        # torch's thread count is per thread once set, but threads started later copy the last value
        # set anywhere (here: the audio pool's 1), so text queries set theirs on every call.
        self.text_threads = torch.get_num_threads()
        # Text queries (and explanations) run on one long-lived thread rather than on whichever of the
        # server's request threads took the request: each new thread that calls torch starts its own OpenMP team, and a text query
        # landing on a cold thread paid for it (p50 128 ms over HTTP against 81 ms in-process at 100k
        # windows). They hold the model lock throughout anyway, so one thread loses no concurrency.
        self.text_pool = ThreadPoolExecutor(1, thread_name_prefix="hade-text")
        self._fingerprint: str | None = None
        # Waveform envelopes: decoded on their own low-priority thread, once per file (cached).
        self.peak_cache = PeakCache()
        self.peak_pool = ThreadPoolExecutor(1, thread_name_prefix="hade-peaks", initializer=lower_thread_priority)
        # The vectors of recent audio uploads, by the query_id their search returned ("Why?" explains them).
        self.audio_queries: OrderedDict[str, Any] = OrderedDict()
        self._audio_queries_lock = threading.Lock()
        # Read once, here: an opened index is read-only, so this does not go stale.
        try:
            self.info: IndexInfo | None = index.info()
        except Exception as exc:  # noqa: BLE001 - /health must still work
            log.warning("index.info() failed: %s", exc)
            self.info = None

    # ---- lookups (no model: never wait behind inference) ------------------------------------------
    def window(self, window_id: int) -> dict[str, Any]:
        """-> {"id", "path", "start", "end"} of a window of the index; NotFound otherwise."""
        if isinstance(window_id, bool) or not isinstance(window_id, int) or not 0 <= window_id < 2**63:
            raise NotFound(f"no window with id {window_id}")
        try:
            rec = self.index.get(window_id)
        except (LookupError, ValueError, InputError):
            raise NotFound(f"no window with id {window_id}") from None
        return {"id": window_id, "path": str(_field(rec, "path")),
                "start": float(_field(rec, "start")), "end": float(_field(rec, "end"))}

    def open_audio(self, window_id: int) -> tuple[BinaryIO, os.stat_result, str]:
        """The indexed file holding the window, opened and verified by the index -> (file, fstat, name).

        The caller streams from (and closes) the returned file, so the bytes served are those of the file
        that was checked. Raises NotFound (unknown id) or StaleFile (missing, changed, outside the root).
        """
        window = self.window(window_id)
        try:
            f, st = self.index.open_audio(window_id)
        except (LookupError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise NotFound(f"no window with id {window_id}") from None
        return f, st, PurePosixPath(window["path"]).name

    # ---- inference -------------------------------------------------------------------------------
    def _hits(self, query: Any, k: int, per_file: bool, priority: int,
              timing: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Search at `priority`. A LOW (audio) search passes the lock to the index as `guard`, taken
        around each batch only; a HIGH (text) search is short and holds the lock throughout, since its
        several model calls (encode, probe, score) would otherwise each wait for an audio batch."""
        kwargs = {"k": k, "candidates": max(self.candidates, k), "per_file": per_file}
        with torch.inference_mode():
            if priority == LOW:
                hits = self.index.search(query, guard=self.model_lock.guard(priority),
                                         audio_batch=self.limits.audio_batch, **kwargs)
            else:
                torch.set_num_threads(self.text_threads)
                with self.model_lock.hold(HIGH):
                    if timing is not None:
                        kwargs["timing"] = timing
                    hits = self.index.search(query, **kwargs)
        return [jsonable({"id": int(h.id), "path": str(h.path), "start": float(h.start), "end": float(h.end),
                          "score": float(h.score)}) for h in hits]

    def search_text(self, query: str, k: int = 10, per_file: bool = False,
                    timing: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Text query -> hits. `timing`, when given, receives "queue" (ms waiting for the text thread),
        "search" (ms from then to the hits, model lock included) and the index's phases (`Index.search`)."""
        text = query.strip()
        if not text:
            raise InputError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        return self._on_text_thread(text, k, per_file, timing)

    def search_like(self, window_id: int, k: int = 10, per_file: bool = False, same_file: bool = False,
                    timing: dict[str, float] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """"More like this": (the window, hits that sound like it), from the index's stored vectors (no
        decoding, no encoding). Its own file's windows are left out unless `same_file`. NotFound for an
        unknown id."""
        from hade.index.search import Like

        window = self.window(window_id)
        return window, self._on_text_thread(Like((window_id,), same_file=same_file), k, per_file, timing)

    def _on_text_thread(self, query: Any, k: int, per_file: bool,
                        timing: dict[str, float] | None) -> list[dict[str, Any]]:
        """`_hits(query, ..., HIGH)` on the text thread (see __init__), timed into `timing`."""
        submitted = time.perf_counter()

        def job() -> list[dict[str, Any]]:
            started = time.perf_counter()
            hits = self._hits(query, k, per_file, HIGH, timing)
            if timing is not None:
                timing["queue"] = 1000 * (started - submitted)
                timing["search"] = 1000 * (time.perf_counter() - started)
            return hits

        return self.text_pool.submit(job).result()

    def search_audio(self, data: bytes | BinaryIO, k: int = 10, per_file: bool = False) -> list[dict[str, Any]]:
        """Query by example -> hits (see `search_audio_query`, which also returns the query's id)."""
        return self.search_audio_query(data, k, per_file)[0]

    def search_audio_query(self, data: bytes | BinaryIO, k: int = 10, per_file: bool = False
                           ) -> tuple[list[dict[str, Any]], str]:
        """Query by example: `data` is the upload (bytes, or a seekable file such as UploadFile.file) ->
        (hits, query_id); `explain` takes the query_id to explain these hits (the last AUDIO_QUERY_CACHE
        uploads are remembered, as one vector each).

        Runs on the audio pool (`max_audio_active` threads, lower CPU priority), so at most that many
        decoded waveforms exist at once; the admission lane (app.py) bounds how many wait for it.
        """
        size = _size(data)
        if size == 0:
            raise InputError("the uploaded file is empty")
        if size > self.max_upload_bytes:
            raise InputError(f"the upload is larger than {self.max_upload_bytes} bytes")
        return self.audio_pool.submit(self._audio_job, data, k, per_file).result()

    def _audio_job(self, data: bytes | BinaryIO, k: int, per_file: bool) -> tuple[list[dict[str, Any]], str]:
        try:
            wave = decode_upload(data, int(self.index.model.sample_rate), self.limits.max_query_seconds)
            with torch.inference_mode():
                vector = self.index.query_vector(wave, guard=self.model_lock.guard(LOW),
                                                 audio_batch=self.limits.audio_batch)
            return self._hits(vector, k, per_file, LOW), self._remember(vector)
        finally:
            wave = None  # noqa: F841 - drop the waveform before trimming the heap
            release_memory()

    def _remember(self, vector: Any) -> str:
        query_id = secrets.token_urlsafe(12)
        with self._audio_queries_lock:
            self.audio_queries[query_id] = vector
            while len(self.audio_queries) > AUDIO_QUERY_CACHE:
                self.audio_queries.popitem(last=False)
        return query_id

    # ---- explanations ----------------------------------------------------------------------------
    def _index_query(self, query: ExplainQuery) -> tuple[Any, str, str]:
        """-> (the query as the index takes it, its label, its kind "text" | "audio" | "like")."""
        from hade.index.search import Like

        given = [v is not None for v in (query.text, query.audio_id, query.like_id)]
        if sum(given) != 1:
            raise InputError("explain needs exactly one query: q (text), audio (the query_id of an audio search) "
                             "or like (the window id of a \"similar sounds\" search)")
        if query.text is not None:
            text = query.text.strip()
            if not text:
                raise InputError("the query is empty")
            return text, text, "text"
        if query.audio_id is not None:
            with self._audio_queries_lock:
                vector = self.audio_queries.get(query.audio_id)
            if vector is None:
                raise NotFound("that audio query is no longer known to the server (it keeps the last "
                               f"{AUDIO_QUERY_CACHE} uploads); search with the clip again")
            return vector, "the uploaded clip", "audio"
        like = self.window(int(query.like_id))  # type: ignore[arg-type]
        return Like((like["id"],), same_file=True), f"sounds like {like['path']} {like['start']:.2f}-" \
            f"{like['end']:.2f} s", "like"

    def _explain_job(self, window_id: int, index_query: Any, wave: np.ndarray | None
                     ) -> tuple[list[Any], np.ndarray, Any]:
        """(file windows, their scores, the THA/factor Explanation of `wave` or None) under the model lock,
        on the text thread (see __init__). The window is explained at the index's window length, zero-padded
        as the index encoded it, so the explained score is the one the window was ranked by."""
        from hade.explain import explain

        torch.set_num_threads(self.text_threads)  # see __init__
        model = self.index.model
        with self.model_lock.hold(HIGH), torch.inference_mode():
            windows, scores = self.index.file_scores(window_id, index_query)
            expl = None
            if wave is not None:
                seconds = self.info.window if self.info is not None else wave.shape[0] / model.sample_rate
                expl = explain(model, wave, index_query, clip_seconds=seconds)
        return windows, scores, expl

    def explain(self, window_id: int, query: ExplainQuery | str) -> dict[str, Any]:
        """Why window `window_id` matched `query`, times in the FILE's seconds: the query's score against
        every window of the file (`curve`, from the stored vectors) and, for a text with a head that has
        them, THA word x time maps and factor weights of the window (`levels`, `factor_*`); `note` says
        what cannot be shown (an audio query has no word maps; a dp head has neither)."""
        if isinstance(query, str):
            query = ExplainQuery(text=query)
        window = self.window(window_id)
        index_query, label, kind = self._index_query(query)
        model = self.index.model
        maps = kind == "text" and bool(model.head.capabilities.explanations)
        wave = None
        if maps:  # file IO here, not on the text thread nor under the model lock
            wave = np.asarray(self.index.window_audio(window_id), dtype=np.float32).reshape(-1)
            if wave.shape[0] == 0:
                raise NotFound(f"window {window_id} has no audio")
        windows, scores, expl = self.text_pool.submit(self._explain_job, window_id, index_query, wave).result()
        matched = next((i for i, w in enumerate(windows) if int(_field(w, "id")) == window_id), 0)
        payload: dict[str, Any] = {
            **window, "query": label, "query_kind": kind, "head": getattr(model.config, "head", None),
            "stored_score": float(scores[matched]), "score": float(scores[matched]),
            "curve": {"start": [float(_field(w, "start")) for w in windows],
                      "end": [float(_field(w, "end")) for w in windows],
                      "score": [float(v) for v in scores], "matched": matched},
            "words": [], "levels": [], "note": explain_note(kind, maps, model),
        }
        if expl is not None:
            payload.update(maps_payload(expl, window["start"]))
        return jsonable(payload)

    # ---- waveform envelopes ------------------------------------------------------------------------
    def peaks(self, window_id: int) -> tuple[Peaks, dict[str, Any]]:
        """The envelope of the indexed file holding the window (computed once per file: see
        hade.serve.peaks) and the window's record. NotFound / StaleFile as `open_audio`."""
        window = self.window(window_id)
        f, st, _ = self.open_audio(window_id)
        key = (window["path"], st.st_size, st.st_mtime_ns)
        cached = self.peak_cache.get(key)
        if cached is not None:
            f.close()
            return cached, window
        return self.peak_pool.submit(self._peaks_job, f, key).result(), window

    def _peaks_job(self, f: BinaryIO, key: tuple[str, int, int]) -> Peaks:
        with f:
            cached = self.peak_cache.get(key)  # computed meanwhile by the request before this one
            if cached is not None:
                return cached
            peaks = compute_peaks(f)
        self.peak_cache.put(key, peaks)
        return peaks

    # ---- status ----------------------------------------------------------------------------------
    def fingerprint(self, info: IndexInfo | None) -> str:
        """The index's recorded model fingerprint, else one computed once from the weights (no model lock:
        it only reads them, and /health must not wait behind inference)."""
        recorded = info.fingerprint if info is not None else None  # None: not recorded, or no info
        if recorded is not None:
            return recorded
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.index.model)
        return self._fingerprint

    def health(self) -> dict[str, Any]:
        """Status and counts for GET /health (hade.serve.status.health_body)."""
        return health_body(self.index, self.info, self.fingerprint(self.info), self.max_upload_bytes)


def _audio_thread_init() -> None:
    """Start of an audio-pool thread: lower CPU priority and one intra-op thread for its torch calls.

    Why one thread: the audio work then stops occupying every core with (spinning) OpenMP workers,
    and torch's thread count is per calling thread once set, so the text queries keep theirs
    (`SearchService._hits` sets it on each call). Measured with benchmarks/load.py --mixed on 2 cores:
    text p95 during 8 uploads of a 590 s clip fell from 20-30 ms to 13-15 ms (3-4 ms alone), and the
    uploads finished no slower.
    """
    lower_thread_priority()
    torch.set_num_threads(1)


def _size(data: bytes | BinaryIO) -> int:
    """Bytes in an upload; a file is left at position 0."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    data.seek(0, os.SEEK_END)
    size = data.tell()
    data.seek(0)
    return size


__all__ = ["ExplainQuery", "MAX_K", "MAX_QUERY_CHARS", "MAX_QUERY_SECONDS", "MAX_UPLOAD_BYTES", "MEDIA_TYPES", "IndexLike",
           "NotFound", "SearchService", "decode_audio_bytes", "jsonable", "media_type", "model_fingerprint"]
