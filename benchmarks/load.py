#!/usr/bin/env python3
"""Bounded load test for `hade serve`: a fixed number of requests at a fixed concurrency, loopback only.

    python benchmarks/load.py --url http://127.0.0.1:8000 --requests 200 --concurrency 8
    python benchmarks/load.py --index runs/my-index --requests 100   # starts a server in-process

Sends GET /search (and every `--audio-every`-th request GET /audio/{id} with a Range header for a hit
seen so far), then prints p50/p95 latency and the error count; exits 1 when any request failed.
Only standard-library HTTP is used; it stops by itself after `--requests` requests.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from hade.serve.cli import is_loopback_host

DEFAULT_QUERIES = (
    "a dog barks", "rain falls on a roof", "a siren wails in the distance", "birds chirp",
    "footsteps on gravel", "an engine idles", "someone knocks on a door", "a bell rings twice",
    "wind blows", "a clock ticks", "people clap", "water bubbles",
)


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urllib.parse.urlsplit(url).hostname or "")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def run_load(base_url: str, requests: int = 200, concurrency: int = 8, queries: Sequence[str] = DEFAULT_QUERIES,
             k: int = 10, audio_every: int = 5, timeout: float = 60.0) -> dict[str, Any]:
    """Send `requests` requests with `concurrency` workers to a server on loopback; return statistics.

    Result: requests, concurrency, errors, error_samples (first 5), p50_ms, p95_ms, max_ms, mean_ms,
    wall_s, requests_per_s, by_kind (counts).
    """
    if not is_loopback_url(base_url):
        raise ValueError(f"{base_url}: the load test only talks to loopback (127.0.0.1, ::1, localhost)")
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be >= 1")
    base = base_url.rstrip("/")
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    seen_ids: list[int] = []
    by_kind: dict[str, int] = {}

    def one(i: int) -> None:
        with lock:
            audio_id = seen_ids[i % len(seen_ids)] if seen_ids and audio_every > 0 and i % audio_every == 0 else None
        if audio_id is not None:
            kind = "audio"
            req = urllib.request.Request(f"{base}/audio/{audio_id}", headers={"Range": "bytes=0-4095"})
        else:
            kind = "search"
            params = urllib.parse.urlencode({"q": queries[i % len(queries)], "k": k})
            req = urllib.request.Request(f"{base}/search?{params}")
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback checked)
                body = resp.read()
                status = resp.status
            ok = status in (200, 206)
            problem = None if ok else f"{kind}: HTTP {status}"
            if ok and kind == "search":
                ids = [int(r["id"]) for r in json.loads(body)["results"]]
                with lock:
                    seen_ids.extend(x for x in ids[:3] if x not in seen_ids)
        except urllib.error.HTTPError as e:
            problem = f"{kind}: HTTP {e.code} {e.read()[:200]!r}"
        except Exception as e:  # connection refused, timeout, bad JSON ...
            problem = f"{kind}: {type(e).__name__}: {e}"
        elapsed = time.perf_counter() - t0
        with lock:
            latencies.append(elapsed)
            by_kind[kind] = by_kind.get(kind, 0) + 1
            if problem is not None:
                errors.append(problem)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "url": base, "requests": requests, "concurrency": concurrency, "errors": len(errors),
        "error_samples": errors[:5], "by_kind": by_kind,
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None, "wall_s": wall, "requests_per_s": requests / wall if wall else None,
    }


def format_report(stats: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [f"{stats['requests']} requests ({', '.join(f'{k} {v}' for k, v in sorted(stats['by_kind'].items()))}) "
             f"at concurrency {stats['concurrency']} to {stats['url']} in {stats['wall_s']:.2f} s "
             f"({f(stats['requests_per_s'])} req/s)",
             f"latency ms: p50 {f(stats['p50_ms'])}  p95 {f(stats['p95_ms'])}  max {f(stats['max_ms'])}  "
             f"mean {f(stats['mean_ms'])}",
             f"errors: {stats['errors']}"]
    lines += [f"  {e}" for e in stats["error_samples"]]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread (context manager)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="hade-serve", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="running server, e.g. http://127.0.0.1:8000 (loopback only)")
    target.add_argument("--index", help="index directory: serve it in-process on a free loopback port")
    p.add_argument("--requests", type=int, default=200, help="total requests (default 200)")
    p.add_argument("--concurrency", type=int, default=8, help="parallel clients (default 8)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--audio-every", type=int, default=5, help="every Nth request fetches audio (0: never)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.requests > 100_000:
        p.error("--requests must be 1..100000 and --concurrency >= 1")
    kwargs = dict(requests=args.requests, concurrency=args.concurrency, k=args.k, audio_every=args.audio_every,
                  timeout=args.timeout)
    if args.url:
        if not is_loopback_url(args.url):
            p.error(f"--url {args.url}: only loopback addresses are allowed")
        stats = run_load(args.url, **kwargs)
    else:
        from hade.index import Index
        from hade.serve.app import create_app

        with BackgroundServer(create_app(Index.open(args.index))) as server:
            stats = run_load(server.url, **kwargs)
    print(json.dumps(stats, indent=2) if args.json else format_report(stats))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
