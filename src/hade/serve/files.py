"""Serving an audio file with HTTP Range support (single byte range), independent of the Starlette version.

Browsers fetch media with ``Range: bytes=N-`` to seek; we answer 206 with that slice. A Range header
that is not a single ``bytes=`` range is ignored (200, whole file; RFC 9110 allows this), one that is
past the end of the file gets 416 with ``Content-Range: bytes */SIZE`` and a JSON error body. HEAD gets
the same status and headers without a body.
"""
from __future__ import annotations

import os
import re
from email.utils import formatdate
from typing import BinaryIO, Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask


CHUNK_BYTES = 64 * 1024
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(Exception):
    """The requested range starts past the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range`` header -> (first, last) inclusive byte positions, or None to send the whole file.

    Raises Unsatisfiable when the (single, well-formed) range lies outside a file of `size` bytes.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header)
    if m is None:  # other units, several ranges or garbage: ignore the header
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:  # invalid: ignore
        return None
    if start >= size:
        raise Unsatisfiable()
    return start, min(end, size - 1)


def _read(f: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    """The bytes [start, start + length) of an open file in CHUNK_BYTES pieces; closes the file at the end."""
    try:
        f.seek(start)
        left = length
        while left > 0:
            data = f.read(min(CHUNK_BYTES, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        f.close()


def _content_disposition(filename: str) -> str:
    return f'inline; filename="{filename}"' if filename and filename.isascii() and '"' not in filename \
        and "\\" not in filename else "inline"


def file_response(request: Request, f: BinaryIO, st: os.stat_result, media_type: str, filename: str = "",
                  cache_seconds: int = 3600) -> Response:
    """200 with the whole open file, 206 with one requested byte range, or 416 JSON; no body for HEAD.

    `f` and `st` come from one open + fstat (`Index.open_audio`), so the bytes sent are those of the
    file that was verified, even if the path is swapped meanwhile. The response closes `f`.
    """
    size = st.st_size
    etag = f'"{st.st_mtime_ns:x}-{size:x}"'
    headers = {
        "accept-ranges": "bytes",
        "etag": etag,
        "last-modified": formatdate(st.st_mtime, usegmt=True),
        "cache-control": f"private, max-age={cache_seconds}",
        "content-disposition": _content_disposition(filename),
    }
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() not in (etag, headers["last-modified"]):
        range_header = None  # the client's copy is stale: send everything
    try:
        span = parse_range(range_header, size)
    except Unsatisfiable:
        f.close()
        return JSONResponse({"error": f"requested range not satisfiable: the file has {size} bytes"},
                            status_code=416, headers={"content-range": f"bytes */{size}", "accept-ranges": "bytes"})
    status, (first, last) = (200, (0, size - 1)) if span is None else (206, span)
    length = max(0, last - first + 1)
    headers["content-length"] = str(length)
    if status == 206:
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    if request.method == "HEAD":
        f.close()
        return Response(status_code=status, media_type=media_type, headers=headers)
    # The background task closes the file also when the client disconnects before the end.
    return StreamingResponse(_read(f, first, length), status_code=status, media_type=media_type,
                             headers=headers, background=BackgroundTask(f.close))


__all__ = ["Unsatisfiable", "file_response", "parse_range"]
