"""The search engine behind `hade serve`: one index, inference serialised under a lock, JSON-ready results.

The web layer (:mod:`hade.serve.app`) only validates requests and maps the exceptions raised here to
HTTP codes: :class:`NotFound` -> 404, :class:`NoAlignment` -> 409, :class:`~hade.errors.InputError`
(bad audio, empty text, ...) -> 400.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hade.errors import InputError

log = logging.getLogger("hade.serve")

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_QUERY_SECONDS = 600.0

# Media types for the containers libsndfile reads (mimetypes guesses some of these badly, e.g. audio/x-wav).
MEDIA_TYPES: dict[str, str] = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
    ".aifc": "audio/aiff", ".au": "audio/basic", ".snd": "audio/basic", ".caf": "audio/x-caf",
    ".w64": "audio/x-w64", ".rf64": "audio/x-rf64",
}


class IndexLike(Protocol):
    """What the server needs from `hade.index.Index` (duck-typed so tests can use a fake)."""

    model: Any

    def search(self, query: Any, k: int = 10, candidates: int = 100, per_file: bool = False) -> list[Any]: ...
    def get(self, id: int) -> Any: ...
    def audio_path(self, id: int) -> Path: ...
    def window_audio(self, id: int) -> np.ndarray: ...
    def info(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...


class NotFound(LookupError):
    """No window with that id (or its audio file is gone)."""


class NoAlignment(Exception):
    """The model's head has no THA levels; `payload` holds what the explanation does have."""

    def __init__(self, message: str, payload: dict[str, Any]) -> None:
        super().__init__(message)
        self.payload = payload


def jsonable(value: Any) -> Any:
    """numpy arrays/scalars -> lists/floats, non-finite floats -> None, recursively."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def media_type(path: str | Path) -> str:
    """Content type of an audio file by extension (application/octet-stream when unknown)."""
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def decode_audio_bytes(data: bytes, sample_rate: int, max_seconds: float = MAX_QUERY_SECONDS) -> np.ndarray:
    """Decode an uploaded clip with soundfile -> float32 mono [T] at `sample_rate`.

    Raises InputError with a user-facing reason for undecodable, empty, too long or non-finite audio.
    """
    import soundfile as sf
    import soxr

    if not data:
        raise InputError("the uploaded file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate <= 0 or f.frames == 0:
                raise InputError("the uploaded audio contains no samples")
            if f.frames > 0 and f.frames / f.samplerate > max_seconds:
                raise InputError(f"the uploaded clip is {f.frames / f.samplerate:.0f} s long; "
                                 f"the limit is {max_seconds:.0f} s")
            wave = f.read(dtype="float32", always_2d=True)
            rate = int(f.samplerate)
    except InputError:
        raise
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"the uploaded file is not audio that libsndfile can decode ({reason}); "
                         "send WAV, FLAC, OGG or MP3") from None
    if wave.shape[0] == 0 or wave.shape[1] == 0:
        raise InputError("the uploaded audio contains no samples")
    if wave.shape[0] / rate > max_seconds:
        raise InputError(f"the uploaded clip is longer than {max_seconds:.0f} s")
    mono = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise InputError("the uploaded audio contains non-finite samples (NaN/Inf)")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
        if mono.shape[0] == 0:
            raise InputError(f"the uploaded clip is too short to resample from {rate} Hz to {sample_rate} Hz")
    return np.ascontiguousarray(mono, dtype=np.float32)


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the model's config and weights."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        try:
            from hade.config import to_dict

            h.update(json.dumps(to_dict(config), sort_keys=True, default=str).encode())
        except Exception:
            h.update(repr(config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


class SearchService:
    """Wraps an index: validated ids, serialised model inference, JSON-ready dicts."""

    def __init__(self, index: IndexLike, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 candidates: int = 100) -> None:
        self.index = index
        self.max_upload_bytes = int(max_upload_bytes)
        self.candidates = int(candidates)
        self.lock = threading.Lock()  # torch inference is not thread-safe for our use: one at a time
        self._fingerprint: str | None = None
        # Read once, here: the index's SQLite connection belongs to the thread that opened it, while
        # requests run in worker threads (and an opened index is read-only, so this does not go stale).
        try:
            self.info: dict[str, Any] = dict(index.info())
        except Exception as exc:  # noqa: BLE001 - /health must still work
            log.warning("index.info() failed: %s", exc)
            self.info = {}

    # ---- lookups ---------------------------------------------------------------------------------
    def window(self, window_id: int) -> dict[str, Any]:
        """-> {"id", "path", "start", "end"} of a window of the index; NotFound otherwise."""
        if isinstance(window_id, bool) or not isinstance(window_id, int) or not 0 <= window_id < 2**63:
            raise NotFound(f"no window with id {window_id}")
        try:
            with self.lock:
                rec = self.index.get(window_id)
        except (LookupError, ValueError, InputError):
            raise NotFound(f"no window with id {window_id}") from None
        return {"id": window_id, "path": str(_field(rec, "path")),
                "start": float(_field(rec, "start")), "end": float(_field(rec, "end"))}

    def audio_file(self, window_id: int) -> Path:
        """Absolute path of the indexed file holding the window (never a client-given path)."""
        self.window(window_id)
        try:
            with self.lock:
                path = Path(self.index.audio_path(window_id))
        except (LookupError, ValueError, InputError):
            raise NotFound(f"no window with id {window_id}") from None
        if not path.is_file():
            raise NotFound(f"the audio file of window {window_id} is no longer on disk")
        return path

    # ---- inference -------------------------------------------------------------------------------
    def _hits(self, query: Any, k: int, per_file: bool) -> list[dict[str, Any]]:
        with self.lock, torch.inference_mode():
            hits = self.index.search(query, k=k, candidates=max(self.candidates, k), per_file=per_file)
        out = []
        for hit in hits:
            out.append(jsonable({"id": int(hit.id), "path": str(hit.path), "start": float(hit.start),
                                 "end": float(hit.end), "score": float(hit.score)}))
        return out

    def search_text(self, query: str, k: int = 10, per_file: bool = False) -> list[dict[str, Any]]:
        text = query.strip()
        if not text:
            raise InputError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        return self._hits(text, k, per_file)

    def search_audio(self, data: bytes, k: int = 10, per_file: bool = False) -> list[dict[str, Any]]:
        if len(data) > self.max_upload_bytes:
            raise InputError(f"the upload is larger than {self.max_upload_bytes} bytes")
        wave = decode_audio_bytes(data, int(self.index.model.sample_rate))
        return self._hits(wave, k, per_file)

    def explain(self, window_id: int, query: str) -> dict[str, Any]:
        """THA heat-map data of `query` vs one window, times in the FILE's seconds.

        Raises NoAlignment (with the score and any factor weights) when the head has no THA.
        """
        from hade.explain import explain

        window = self.window(window_id)
        text = query.strip()
        if not text:
            raise InputError("the query is empty")
        model = self.index.model
        sr = int(model.sample_rate)
        with self.lock:
            wave = np.asarray(self.index.window_audio(window_id), dtype=np.float32).reshape(-1)
            if wave.shape[0] == 0:
                raise NotFound(f"window {window_id} has no audio")
            expl = explain(model, wave, text, clip_seconds=wave.shape[0] / sr)
        offset = window["start"]
        levels = []
        for lv in expl.levels or []:
            levels.append({
                "level": lv.level, "audio_stage": lv.audio_stage, "text_block": lv.text_block,
                "text_to_audio": lv.text_to_audio, "audio_to_text": lv.audio_to_text,
                "time_edges": np.asarray(lv.time_edges, dtype=np.float64) + offset,
                "bin_tokens": lv.bin_tokens, "text_enhanced": lv.text_enhanced,
                "audio_enhanced": lv.audio_enhanced,
                "level_score": lv.text_enhanced + lv.audio_enhanced,
            })
        payload = jsonable({
            **window, "query": text, "score": expl.score, "head": getattr(model.config, "head", None),
            "clip_seconds": expl.clip_seconds, "audio_seconds": expl.audio_seconds,
            "audio_end": offset + expl.audio_seconds,
            "words": expl.words or [], "levels": levels, "tha_score": expl.tha_score, "tha_scale": expl.tha_scale,
            "factor_similarity": expl.factor_similarity, "confidence": expl.confidence,
            "factor_contribution": expl.factor_contribution, "dcr_score": expl.dcr_score,
        })
        if expl.levels is None:
            raise NoAlignment(f"the model's head ({payload['head']}) has no THA levels, so there is no "
                              "word × time heat map; the score and any factor weights are included", payload)
        return payload

    # ---- status ----------------------------------------------------------------------------------
    def fingerprint(self, info: dict[str, Any]) -> str:
        for key in ("model_fingerprint", "fingerprint"):
            if isinstance(info.get(key), str):
                return info[key]
        model_info = info.get("model")
        if isinstance(model_info, dict) and isinstance(model_info.get("fingerprint"), str):
            return model_info["fingerprint"]
        if self._fingerprint is None:
            with self.lock:
                self._fingerprint = model_fingerprint(self.index.model)
        return self._fingerprint

    def health(self) -> dict[str, Any]:
        info = self.info
        windows = len(self.index)
        model = self.index.model
        return jsonable({
            "status": "ok", "windows": windows,
            "files": info.get("files", info.get("num_files")),
            "head": getattr(getattr(model, "config", None), "head", None),
            "sample_rate": int(model.sample_rate),
            "model_fingerprint": self.fingerprint(info),
            "max_upload_bytes": self.max_upload_bytes, "max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K,
            "index": {k: v for k, v in info.items() if k not in ("path", "root")},  # no server paths
        })


__all__ = ["MAX_K", "MAX_QUERY_CHARS", "MAX_UPLOAD_BYTES", "MEDIA_TYPES", "IndexLike", "NoAlignment", "NotFound",
           "SearchService", "decode_audio_bytes", "jsonable", "media_type", "model_fingerprint"]
