"""ASGI guards in front of the app: the Host header check (DNS rebinding) and admission lanes (503).

Why our own Host check rather than Starlette's TrustedHostMiddleware: that one answers plain text, cuts
``[::1]:8000`` at the first colon, and cannot say "any 127.x address"; the rules here are small.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hade.serve.concurrency import Lane
from hade.serve.limits import is_loopback_name

ANY_HOST = "*"
_UNSPECIFIED = ("", "0.0.0.0", "::", "[::]")


def host_name(value: str) -> str | None:
    """The host part of a Host header value, lower-cased, without port, brackets or trailing dot.

    None when the value is malformed (empty, bad port, unbalanced brackets, a bare IPv6 address).
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = (value[1:end], value[end + 1:]) if end > 0 else ("", "")
    elif value.count(":") > 1:  # a bare IPv6 address is not a valid Host
        return None
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    host = host.rstrip(".")
    return _canonical(host) if host else None


def _canonical(host: str) -> str:
    """IP literals in one spelling (``0:0::1`` == ``::1``); names unchanged."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


@dataclass(frozen=True)
class HostPolicy:
    """Which Host header values name this server: loopback names always, plus `names`; or any."""

    names: frozenset[str] = frozenset()
    any_host: bool = False

    def allows(self, header: str | None) -> bool:
        if self.any_host:
            return True
        host = host_name(header or "")
        return host is not None and (is_loopback_name(host) or host in self.names)


def allowed_host_patterns(extra: Iterable[str] = (), bound_host: str | None = None) -> HostPolicy:
    """The policy for a server bound to `bound_host` (added when a specific address) with `--allowed-host`s."""
    names: set[str] = set()
    values = list(extra)
    if bound_host is not None and bound_host.strip().lower() not in _UNSPECIFIED:
        values.append(bound_host)
    for value in values:
        if value.strip() == ANY_HOST:
            return HostPolicy(any_host=True)
        host = value.strip().lower()
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        names.add(_canonical(host.rstrip(".")))
    return HostPolicy(frozenset(names))


def browse_url(bound_host: str, port: int) -> str:
    """The address to open in a browser for a server bound to `bound_host`: the host itself, except that the
    unspecified addresses (0.0.0.0, ::), which are no address to connect to, become loopback (127.0.0.1,
    [::1]). The Host check of `allowed_host_patterns(..., bound_host)` accepts every address this gives."""
    host = bound_host.strip()
    if host.lower() in _UNSPECIFIED:
        host = "::1" if ":" in host else "127.0.0.1"
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class HostCheckMiddleware:
    """400 JSON for HTTP requests whose Host header does not name this server.

    A web page on another site can make the user's browser send requests to 127.0.0.1 under its own
    host name (DNS rebinding); its Host header still carries that name, so refusing unknown names keeps
    such pages from reading the index or its audio.
    """

    def __init__(self, app: ASGIApp, allowed: HostPolicy) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed.allows(host := _header(scope, b"host")):
            shown = (host or "").strip()[:100]
            message = (f"Host header {shown!r} is not a name of this server; open it as http://127.0.0.1:PORT/ "
                       f"or start `hade serve` with --allowed-host {shown.split(':')[0] or 'NAME'}"
                       if shown else "the request has no Host header")
            await JSONResponse({"error": message}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class AdmissionMiddleware:
    """Bounded lanes: a request whose lane is full gets 503 + Retry-After before the app sees it.

    routes: (method, path, lane); a path ending in "/" matches as a prefix. The refused request's body
    is read and discarded (up to `drain_limit` bytes, never stored) so that the client, which is usually
    still sending its upload, can read the answer; a client that sent `Expect: 100-continue` is answered
    at once and never sends the body.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[tuple[str, str, Lane]], retry_after: int,
                 drain_limit: int) -> None:
        self.app = app
        self.routes = list(routes)
        self.retry_after = int(retry_after)
        self.drain_limit = int(drain_limit)

    def lane(self, scope: Scope) -> Lane | None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        for method, route, lane in self.routes:
            if scope.get("method") == method and (path.startswith(route) if route.endswith("/") else path == route):
                return lane
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane(scope) if scope["type"] == "http" else None
        if lane is None:
            await self.app(scope, receive, send)
            return
        if not lane.try_enter():
            await self._refuse(scope, receive, send, lane)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            lane.leave()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, lane: Lane) -> None:
        if (_header(scope, b"expect") or "").lower() != "100-continue":
            drained = 0
            while drained <= self.drain_limit:
                message = await receive()
                if message["type"] != "http.request":
                    break
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        message = (f"the server is busy: {lane.capacity} {lane.name} requests are already being served or "
                   f"waiting; retry in {self.retry_after} s")
        await JSONResponse({"error": message}, status_code=503,
                           headers={"retry-after": str(self.retry_after)})(scope, receive, send)


__all__ = ["ANY_HOST", "AdmissionMiddleware", "HostCheckMiddleware", "HostPolicy", "allowed_host_patterns",
           "browse_url", "host_name", "is_loopback_name"]
