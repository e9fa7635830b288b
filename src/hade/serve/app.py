"""`hade serve`: a FastAPI app over one search index, plus the static web page at `/`.

Endpoints (every error is JSON ``{"error": "..."}`` with a 4xx code; 500 only for bugs):

* ``GET  /search?q=&k=&per_file=``   text query -> ranked windows (id, path, start, end, score, audio_url)
* ``POST /search/audio?k=&per_file=`` multipart field ``file``: a query clip (<= max_upload_bytes); the
                                     answer's ``query_id`` names it for ``/explain``
* ``GET|HEAD /audio/{id}``           the indexed file holding window ``id`` (HTTP Range supported), only if
                                     it is still the file that was indexed (404 gone, 409 changed/outside)
* ``GET  /explain/{id}?q=|audio=|like=`` why the window matched the query that found it: the query's score
                                     over every window of the file (stored vectors) and, for a text with a
                                     THA/factor head, word x time maps (file time) and factor weights; an
                                     audio search's ``query_id`` is ``audio=``, "Similar sounds" is ``like=``
* ``GET  /peaks/{id}``               waveform envelope (min/max pairs) of the indexed file holding the window,
                                     computed once per file (cached)
* ``GET  /health``                   status, counts, model head and fingerprint; 503 + "degraded" when a file
                                     of the index is damaged (with the problems and the repair command)
* ``GET  /``                         the search page (static HTML/JS/CSS, no external resources)

Guards, outermost first: the Host header must name this server (400; DNS rebinding), request bodies are
bounded (413), and each kind of model work has an admission lane: audio uploads (1 encoding + 2 waiting by
default) and text requests (32 in flight) beyond which the answer is 503 with Retry-After, given before
an upload is parsed or decoded. A damaged index file met by a request answers 503 naming the file and the
repair command. Limits and defaults: :mod:`hade.serve.limits`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
import numpy as np
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hade.errors import HadeError, IndexDamaged, StaleFile
from hade.serve.concurrency import Lane
from hade.serve.files import file_response
from hade.serve.guards import AdmissionMiddleware, HostCheckMiddleware, allowed_host_patterns
from hade.serve.limits import MAX_K, MAX_PEAKS_QUEUE, MAX_QUERY_CHARS, MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD, Limits
from hade.serve.service import ExplainQuery, IndexLike, NotFound, SearchService, media_type
from hade.utils.jsonable import jsonable

log = logging.getLogger("hade.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads nothing from elsewhere; this makes the browser enforce it.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": ("default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"),
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(jsonable({"error": message, **extra}), status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Reject request bodies over `max_bytes` with 413 JSON, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    await error_response(400, "invalid Content-Length header")(scope, receive, send)
                    return
                if too_big:
                    await error_response(413, message)(scope, receive, send)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge()
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if exceeded:  # the app answered a body it could not read whole: replace by our 413
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await error_response(413, message)(scope, receive, send)


class _TooLarge(Exception):
    pass


class SecurityHeadersMiddleware:
    """Add SECURITY_HEADERS (CSP: nothing from other origins, nosniff, ...) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                present = {name.lower() for name, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [h for h in self.extra if h[0] not in present]
            await send(msg)

        await self.app(scope, receive, send_with_headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return error_response(404, str(exc))

    @app.exception_handler(StaleFile)
    async def stale_file(request: Request, exc: StaleFile) -> Response:
        return error_response(404 if exc.reason == "missing" else 409, str(exc), reason=exc.reason)

    @app.exception_handler(IndexDamaged)
    async def index_damaged(request: Request, exc: IndexDamaged) -> Response:
        log.error("damaged index: %s", exc)
        return error_response(503, str(exc))

    @app.exception_handler(HadeError)
    async def input_error(request: Request, exc: HadeError) -> Response:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")


def create_app(index: IndexLike, max_upload_bytes: int = MAX_UPLOAD_BYTES, threads: int | None = None,
               candidates: int = 100, *, allowed_hosts: Sequence[str] = (), bound_host: str | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The web app over an open index (see `hade.index.Index.open`).

    Text queries run torch (and faiss) on one thread of the app with `threads` intra-op threads. Open the
    index with `torch.set_num_threads(1)` on the calling thread, as `hade serve` does: an OpenMP team
    formed on it would stay beside the text thread's, and with more OpenMP threads than cores libgomp
    stops spin-waiting, which made `hade serve`'s text queries 1.4x slower (docs/search-scale.md).

    max_upload_bytes: largest query clip accepted by POST /search/audio (413 above).
    threads: if given, `torch.set_num_threads(threads)` (process-wide).
    candidates: shortlist size passed to `index.search` (at least k).
    allowed_hosts: Host header names accepted besides the loopback names ("*" accepts any: unsafe).
    bound_host: the address the server listens on; accepted as a Host when it is a specific address.
    limits: queue bounds and the rest (hade.serve.limits); its max_upload_bytes is replaced by the argument.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    base = limits or Limits()
    limits = replace(base, max_upload_bytes=int(max_upload_bytes),
                     allowed_hosts=tuple(allowed_hosts) or base.allowed_hosts)
    service = SearchService(index, limits=limits, candidates=candidates)
    # No /docs: Swagger UI loads from a CDN, and the page must work offline (the schema is at /openapi.json).
    app = FastAPI(title="hade search", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.service = service
    _install_error_handlers(app)
    lanes = {"audio": Lane("audio", limits.max_audio_active + limits.max_audio_queue),
             "text": Lane("text", limits.max_text_queue), "peaks": Lane("peaks", MAX_PEAKS_QUEUE)}
    app.state.lanes = lanes
    # Starlette runs the last-added middleware first: Host check, then body limit, then admission.
    app.add_middleware(AdmissionMiddleware, routes=[("POST", "/search/audio", lanes["audio"]),
                                                    ("GET", "/search", lanes["text"]),
                                                    ("GET", "/explain/", lanes["text"]),
                                                    ("GET", "/similar/", lanes["text"]),
                                                    ("GET", "/peaks/", lanes["peaks"])],
                       retry_after=limits.retry_after_seconds, drain_limit=max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(HostCheckMiddleware, allowed=allowed_host_patterns(limits.allowed_hosts, bound_host))
    app.add_middleware(SecurityHeadersMiddleware)
    _add_routes(app, service)
    return app


def set_server_timing(response: Response, timing: dict[str, float], started: float) -> None:
    """A `Server-Timing` header of `timing`'s phases (ms) plus "handler": the ms since `started`."""
    timing["handler"] = 1000 * (time.perf_counter() - started)
    response.headers["server-timing"] = ", ".join(f"{name};dur={ms:.1f}" for name, ms in timing.items())


def _add_routes(app: FastAPI, service: SearchService) -> None:
    max_upload_bytes = service.max_upload_bytes

    def with_urls(request: Request, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        root = request.scope.get("root_path", "").rstrip("/")
        return [{**h, "audio_url": f"{root}/audio/{h['id']}"} for h in hits]

    k_param = Query(10, ge=1, le=MAX_K, description=f"number of results, 1..{MAX_K}")
    per_file_param = Query(False, description="at most one window per file")

    @app.get("/search")
    def search(request: Request, response: Response,
               q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for"),
               k: int = k_param, per_file: bool = per_file_param) -> dict[str, Any]:
        """Text query -> the k best windows. The `Server-Timing` header gives the milliseconds spent waiting
        for the text thread (`queue`), in the index's search (`search`) and in this handler (`handler`)."""
        started = time.perf_counter()
        timing: dict[str, float] = {}
        hits = service.search_text(q, k=k, per_file=per_file, timing=timing)
        set_server_timing(response, timing, started)
        return {"query": q.strip(), "k": k, "per_file": per_file, "results": with_urls(request, hits)}

    @app.post("/search/audio")
    def search_audio(request: Request, file: UploadFile = File(..., description="query clip"),
                     k: int = k_param, per_file: bool = per_file_param) -> dict[str, Any]:
        """Query by example: an uploaded clip (decoded with soundfile) -> the k best windows."""
        if file.size is not None and file.size > max_upload_bytes:
            raise StarletteHTTPException(413, f"the upload is larger than {max_upload_bytes} bytes")
        hits, query_id = service.search_audio_query(file.file, k=k, per_file=per_file)
        return {"query": file.filename or "upload", "query_id": query_id, "k": k, "per_file": per_file,
                "results": with_urls(request, hits)}

    @app.get("/similar/{window_id}")
    def similar(request: Request, response: Response, window_id: int, k: int = k_param,
                per_file: bool = per_file_param,
                same_file: bool = Query(False, description="also other windows of the window's own file")
                ) -> dict[str, Any]:
        """More like this: the k windows that sound most like indexed window `window_id` (its stored vector:
        nothing is decoded or encoded). Its own file is left out unless `same_file`. 404 for an unknown id."""
        started = time.perf_counter()
        timing: dict[str, float] = {}
        window, hits = service.search_like(window_id, k=k, per_file=per_file, same_file=same_file, timing=timing)
        set_server_timing(response, timing, started)
        return {"query": with_urls(request, [window])[0], "k": k, "per_file": per_file, "same_file": same_file,
                "results": with_urls(request, hits)}

    @app.api_route("/audio/{window_id}", methods=["GET", "HEAD"])
    def audio(request: Request, window_id: int) -> Response:
        """The indexed file holding a window (the page seeks to the window); single-range requests -> 206.

        Served from the file the index opened and verified (same size and mtime as indexed, inside the
        indexed folder), never from a path given by the client.
        """
        f, st, name = service.open_audio(window_id)
        return file_response(request, f, st, media_type(name), filename=name)

    _add_explain_routes(app, service)

    @app.get("/health")
    def health() -> Response:
        """200 {"status": "ok", ...}, or 503 {"status": "degraded", "problems", "repair", "error"}."""
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_explain_routes(app: FastAPI, service: SearchService) -> None:
    """GET /explain/{id} and GET /peaks/{id}: what the page's "Why?" and waveform thumbnails draw."""

    @app.get("/explain/{window_id}")
    def explain(window_id: int,
                q: str | None = Query(None, min_length=1, max_length=MAX_QUERY_CHARS, description="query text"),
                audio: str | None = Query(None, min_length=1, max_length=64,
                                          description="query_id of an audio search"),
                like: int | None = Query(None, description="window id of a \"similar sounds\" search")
                ) -> dict[str, Any]:
        """Why the window matched the query (exactly one of q, audio, like): the query's score over every
        window of the file, and for a text with a THA/factor head word x time maps and factor weights."""
        return service.explain(window_id, ExplainQuery(text=q, audio_id=audio, like_id=like))

    @app.get("/peaks/{window_id}")
    def peaks(window_id: int) -> Response:
        """The waveform envelope of the indexed file holding the window: {"id", "path", "start", "end",
        "duration", "peaks": [[min, max], ...]} over equal spans of the file (hade.serve.peaks)."""
        envelope, window = service.peaks(window_id)
        pairs = np.round(np.stack([envelope.mins, envelope.maxs], 1).astype(np.float64), 4).tolist()
        return JSONResponse({**window, "duration": envelope.duration, "peaks": pairs},
                            headers={"cache-control": "private, max-age=3600"})


__all__ = ["BodyLimitMiddleware", "STATIC_DIR", "create_app"]
