#!/usr/bin/env python3
"""Bounded load test for `hade serve`: a fixed number of requests at a fixed concurrency, loopback only.

    python benchmarks/load.py --url http://127.0.0.1:8000 --requests 200 --concurrency 8
    python benchmarks/load.py --index runs/my-index --requests 100   # starts a server in-process
    python benchmarks/load.py --mixed [--index IDX | --model tiny|demo] [--uploads 8 --clip-seconds 590] [--quick]

Sends GET /search (and every `--audio-every`-th request GET /audio/{id} with a Range header for a hit
seen so far), then prints p50/p95 latency and the error count; exits 1 when any request failed.
Only standard-library HTTP is used; it stops by itself after `--requests` requests.

--mixed starts `hade serve` as a subprocess on a free loopback port (over --index, or over an index it
builds from a generated SynthCaps folder and `--model`: tiny, or demo = make demo's THA+DCR), measures
text-query latency alone, then while `--uploads` concurrent long-audio uploads run (each retried
promptly when refused with 503, so audio is being encoded all along), and reads the server's RSS from
/proc/PID/status: baseline (after warm-up), peak (sampled, and VmHWM) and final (after the burst). Goals (issue 12, on 2 cores): text p95 during the uploads within 3x
its value alone; final RSS within 20 % of the baseline. Exits 1 when a request fails other than a 503.
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


# ---- mixed load: long audio uploads + text queries against a `hade serve` subprocess ---------------
def read_rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of process `pid` in bytes, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def long_clip(seconds: float, sample_rate: int = 8000) -> bytes:
    """A WAV (16-bit mono) of `seconds` of tones in noise, built block by block."""
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    total = int(seconds * sample_rate)
    with sf.SoundFile(buf, "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV") as f:
        for start in range(0, total, sample_rate * 10):
            t = np.arange(start, min(total, start + sample_rate * 10)) / sample_rate
            f.write(0.3 * np.sin(2 * np.pi * (300 + 50 * (start // sample_rate % 7)) * t)
                    + 0.05 * rng.standard_normal(t.shape[0]))
    return buf.getvalue()


def multipart(field: str, filename: str, data: bytes, content_type: str = "audio/wav") -> tuple[bytes, str]:
    """(body, content-type header) of a multipart/form-data request with one file field."""
    boundary = f"hade-bench-{time.monotonic_ns():x}"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 600.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback checked)
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class ServerProcess:
    """`hade serve INDEX` as a subprocess on a free loopback port (context manager)."""

    def __init__(self, index: str, extra: Sequence[str] = ()) -> None:
        import subprocess

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "hade.cli", "serve", str(index), "--port", str(self.port),
               "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> "ServerProcess":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hade serve exited with {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                if http(f"{self.url}/health", timeout=5)[0] in (200, 503):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("hade serve did not answer /health within 120 s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def build_bench_index(work: str, clips: int = 24, model: str = "tiny") -> str:
    """A SynthCaps folder, a model with random audio weights and an index over them under `work`; returns
    the index path. model: "tiny" (a few-layer test model, fast) or "demo" (the architecture `make demo`
    trains: THA+DCR over HTSAT-cpu and pretrained MiniLM; untrained weights cost the same compute)."""
    import os

    import torch

    import hade
    from hade.checkpoint import save_model
    from hade.config import ModelConfig
    from hade.data.synthcaps import generate
    from hade.index import build_index

    if model not in ("tiny", "demo"):
        raise ValueError(f"--model: expected tiny or demo, got {model!r}")
    index = os.path.join(work, "bench.idx" if model == "tiny" else f"bench-{model}.idx")
    if os.path.exists(os.path.join(index, "index.sqlite")):
        return index
    sounds = os.path.join(work, "sounds")
    if not os.path.isdir(sounds):
        generate(sounds, clips=clips, sample_rate=8000, duration=4.0, progress=False)
    torch.manual_seed(0)
    if model == "demo":
        from hade.demo import demo_config

        config = demo_config("tha+dcr", epochs=1).model
    else:
        config = ModelConfig(audio_encoder="htsat-test", text_encoder="minilm", text_pretrained=False,
                             text_overrides={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                                             "intermediate_size": 64}, embed_dim=32, max_text_tokens=24, head="dp")
    ckpt = os.path.join(work, f"ckpt-{model}")
    save_model(hade.create_model(config).eval(), ckpt)
    build_index(sounds, index, ckpt=ckpt, progress=False)
    return index


def _text_loop(base: str, stop: threading.Event | None, count: int, latencies: list[float],
               errors: list[str]) -> None:
    """Sequential text queries: `count` of them, or until `stop` is set (then at least one)."""
    i = 0
    while (stop is None and i < count) or (stop is not None and (i == 0 or not stop.is_set())):
        params = urllib.parse.urlencode({"q": DEFAULT_QUERIES[i % len(DEFAULT_QUERIES)], "k": 10})
        t0 = time.perf_counter()
        status, _, body = http(f"{base}/search?{params}", timeout=120)
        latencies.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            errors.append(f"text: HTTP {status} {body[:200]!r}")
        i += 1


RETRY_SLEEP_S = 1.0  # default pause before retrying a refused upload (the server advertises 5 s)


def _upload(base: str, body: bytes, ctype: str, result: dict[str, Any], lock: threading.Lock,
            retry_sleep: float | None = RETRY_SLEEP_S) -> None:
    """One upload, retried while the server answers 503 (at most 2000 tries).

    Retries after `retry_sleep` seconds rather than the advertised Retry-After (which it checks is
    present), so the server has audio to encode all along while the text queries are measured; None
    honours Retry-After. Each refused upload is still sent whole (urllib has no Expect: 100-continue),
    so short pauses also measure the cost of refusing a retry storm.
    """
    t0 = time.perf_counter()
    for _ in range(2000):
        try:
            status, headers, text = http(f"{base}/search/audio?k=5", data=body, headers={"Content-Type": ctype})
        except OSError as e:
            status, headers, text = -1, {}, str(e).encode()
        if status != 503:
            break
        with lock:
            result["refused"] += 1
            if not any(k.lower() == "retry-after" for k in headers):
                result["errors"].append("upload: 503 without Retry-After")
        advertised = float(next((v for k, v in headers.items() if k.lower() == "retry-after"), "1"))
        time.sleep(advertised if retry_sleep is None else retry_sleep)
    with lock:
        if status == 200:
            result["ok"] += 1
            result["latencies"].append((time.perf_counter() - t0) * 1000)
        else:
            result["errors"].append(f"upload: HTTP {status} {text[:200]!r}")


def _rss_sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(0.05):
        try:
            peak[0] = max(peak[0], read_rss(pid)["VmRSS"])
        except OSError:
            return


def run_mixed(base: str, pid: int, clip: bytes, uploads: int = 8, text_alone: int = 40,
              settle_s: float = 3.0, retry_sleep: float | None = RETRY_SLEEP_S) -> dict[str, Any]:
    """Text latency alone, then during `uploads` concurrent uploads of `clip`; the server's RSS around it."""
    if not is_loopback_url(base):
        raise ValueError(f"{base}: the load test only talks to loopback (127.0.0.1, ::1, localhost)")
    errors: list[str] = []
    body, ctype = multipart("file", "long.wav", clip)
    small, small_type = multipart("file", "warm.wav", clip[:44 + 8000 * 2 * 2])  # header + ~2 s: warm-up
    _text_loop(base, None, 3, [], errors)
    http(f"{base}/search/audio?k=5", data=small, headers={"Content-Type": small_type})
    time.sleep(0.5)
    baseline = read_rss(pid)["VmRSS"]
    alone: list[float] = []
    _text_loop(base, None, text_alone, alone, errors)
    lock, stop, sampler_stop = threading.Lock(), threading.Event(), threading.Event()
    up: dict[str, Any] = {"ok": 0, "refused": 0, "errors": [], "latencies": []}
    peak = [baseline]
    sampler = threading.Thread(target=_rss_sampler, args=(pid, sampler_stop, peak), daemon=True)
    sampler.start()
    during: list[float] = []
    text = threading.Thread(target=_text_loop, args=(base, stop, 0, during, errors), daemon=True)
    workers = [threading.Thread(target=_upload, args=(base, body, ctype, up, lock, retry_sleep), daemon=True)
               for _ in range(uploads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(0.2)  # let the uploads reach the server before the text client starts measuring
    text.start()
    for w in workers:
        w.join()
    burst_s = time.perf_counter() - t0
    stop.set()
    text.join()
    time.sleep(settle_s)
    sampler_stop.set()
    sampler.join()
    rss = read_rss(pid)
    errors += up["errors"]
    p95_alone, p95_during = percentile(alone, 95), percentile(during, 95)
    return {
        "uploads": uploads, "clip_bytes": len(clip), "burst_s": burst_s, "retry_sleep": retry_sleep,
        "uploads_ok": up["ok"], "uploads_refused_503": up["refused"],
        "upload_p50_ms": percentile(up["latencies"], 50), "upload_max_ms": max(up["latencies"], default=None),
        "text_alone_n": len(alone), "text_alone_p50_ms": percentile(alone, 50), "text_alone_p95_ms": p95_alone,
        "text_during_n": len(during), "text_during_p50_ms": percentile(during, 50),
        "text_during_p95_ms": p95_during, "text_during_max_ms": max(during, default=None),
        "p95_ratio": p95_during / p95_alone if p95_alone and p95_during else None,
        "rss_baseline": baseline, "rss_peak_sampled": peak[0], "rss_vmhwm": rss["VmHWM"], "rss_final": rss["VmRSS"],
        "rss_final_ratio": rss["VmRSS"] / baseline, "errors": len(errors), "error_samples": errors[:5],
    }


def format_mixed(stats: dict[str, Any]) -> str:
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    def mb(v: int) -> str:
        return f"{v / 2**20:.0f} MiB"

    ratio = stats["p95_ratio"]
    final = stats["rss_final_ratio"]
    retry = "Retry-After" if stats.get("retry_sleep") is None else f"{stats['retry_sleep']:g} s"
    lines = [
        f"{stats['uploads']} concurrent uploads of {stats['clip_bytes'] / 1e6:.1f} MB: {stats['uploads_ok']} answered, "
        f"{stats['uploads_refused_503']} refusals (503 + Retry-After; retried after {retry}), burst {stats['burst_s']:.1f} s, "
        f"upload latency p50 {ms(stats['upload_p50_ms'])} max {ms(stats['upload_max_ms'])}",
        f"text query        alone: p50 {ms(stats['text_alone_p50_ms'])}  p95 {ms(stats['text_alone_p95_ms'])}  "
        f"(n={stats['text_alone_n']})",
        f"text query during burst: p50 {ms(stats['text_during_p50_ms'])}  p95 {ms(stats['text_during_p95_ms'])}  "
        f"max {ms(stats['text_during_max_ms'])}  (n={stats['text_during_n']})",
        f"text p95 during/alone: {'-' if ratio is None else f'{ratio:.2f}x'} (goal <= 3x: "
        f"{'met' if ratio is not None and ratio <= 3 else 'NOT met'})",
        f"server RSS: baseline {mb(stats['rss_baseline'])}, peak {mb(stats['rss_peak_sampled'])} "
        f"(VmHWM {mb(stats['rss_vmhwm'])}), final {mb(stats['rss_final'])} = {final:.2f}x baseline "
        f"(goal <= 1.2x: {'met' if final <= 1.2 else 'NOT met'})",
        f"errors: {stats['errors']}",
    ]
    return "\n".join(lines + [f"  {e}" for e in stats["error_samples"]])


def mixed_main(argv: Sequence[str]) -> int:
    import tempfile

    p = argparse.ArgumentParser(prog="load.py --mixed", description="long audio uploads + text queries")
    p.add_argument("--index", help="index directory (default: build one from SynthCaps and --model)")
    p.add_argument("--model", choices=["tiny", "demo"], default="tiny",
                   help="model of the generated index: tiny (default, fast) or demo (make demo's THA+DCR "
                        "architecture, untrained)")
    p.add_argument("--work", help="folder for the generated index (default: a temporary folder)")
    p.add_argument("--uploads", type=int, default=None, help="concurrent uploads (default 8; --quick 4)")
    p.add_argument("--clip-seconds", type=float, default=None, help="upload length (default 590; --quick 60)")
    p.add_argument("--text-queries", type=int, default=None, help="text queries alone (default 100; --quick 10)")
    p.add_argument("--retry-sleep", type=float, default=RETRY_SLEEP_S,
                   help=f"seconds before retrying a refused upload (default {RETRY_SLEEP_S}; "
                        "0 or less: honour Retry-After)")
    p.add_argument("--quick", action="store_true", help="a small run for tests (4 x 60 s uploads)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `hade serve` argument (repeatable)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = p.parse_args(argv)
    uploads = args.uploads or (4 if args.quick else 8)
    seconds = args.clip_seconds or (60.0 if args.quick else 590.0)
    text_alone = args.text_queries or (10 if args.quick else 100)
    if uploads < 1 or not 0 < seconds <= 600 or text_alone < 1:
        p.error("--uploads and --text-queries must be >= 1, --clip-seconds in (0, 600]")
    with tempfile.TemporaryDirectory(prefix="hade-load-") as tmp:
        index = args.index or build_bench_index(args.work or tmp, model=args.model)
        clip = long_clip(seconds)
        with ServerProcess(index, args.serve_arg) as server:
            stats = run_mixed(server.url, server.pid, clip, uploads=uploads, text_alone=text_alone,
                              settle_s=1.0 if args.quick else 3.0,
                              retry_sleep=args.retry_sleep if args.retry_sleep > 0 else None)
    print(json.dumps(stats, indent=2) if args.json else format_mixed(stats))
    return 1 if stats["errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--mixed" in argv:
        argv.remove("--mixed")
        return mixed_main(argv)
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
