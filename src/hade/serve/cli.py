"""`hade serve INDEX`: serve a search index over HTTP (registered in hade.cli's COMMANDS)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hade.config import COMPUTE_DTYPES
from hade.errors import InputError
from hade.serve.concurrency import ALLOCATORS
from hade.serve.limits import AUDIO_BATCH, MAX_AUDIO_QUEUE, MAX_TEXT_QUEUE, MAX_UPLOAD_BYTES, is_loopback_name

DEFAULT_UPLOAD_MIB = MAX_UPLOAD_BYTES / 2**20


def default_threads() -> int:
    """Torch threads for the server: the CPUs this process may use, at most 4 (one request at a time)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade serve` to a sub-parser set (dispatch with `cmd_serve`)."""
    p = subparsers.add_parser("serve", help="serve a search index over HTTP with a web page")
    p.add_argument("index", type=Path, help="index directory (written by `hade index`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--root", type=Path, default=None,
                   help="where the indexed files are now (default: the folder they were indexed from)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32",
                   help="query encoder precision (autocast; bf16 on CPUs with AMX/AVX512-BF16 or CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch CPU threads (default: min(4, CPUs) = {default_threads()})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_UPLOAD_MIB,
                   help="largest query clip accepted by POST /search/audio, in MiB (default 20)")
    p.add_argument("--max-audio-queue", type=int, default=MAX_AUDIO_QUEUE,
                   help=f"audio uploads waiting while one is encoded; more get 503 + Retry-After "
                        f"(default {MAX_AUDIO_QUEUE})")
    p.add_argument("--max-text-queue", type=int, default=MAX_TEXT_QUEUE,
                   help=f"text queries in flight; more get 503 + Retry-After (default {MAX_TEXT_QUEUE})")
    p.add_argument("--audio-batch", type=int, default=AUDIO_BATCH,
                   help=f"windows of an uploaded clip encoded per turn of the model; a text query waits for at "
                        f"most one turn: fewer favour text queries, more finish uploads sooner (default "
                        f"{AUDIO_BATCH}; docs/security.md has the trade-off measured)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also accept this Host header name (repeatable; loopback names and a specific --host "
                        "are always accepted). '*' accepts any name: unsafe, it lets web pages the user visits "
                        "read the index through DNS rebinding")
    p.add_argument("--allocator", choices=ALLOCATORS, default="tuned",
                   help="tuned (default): glibc's mmap/trim thresholds fixed at 256/512 MiB, which keeps re-ranking "
                        "buffers on the heap; system: glibc's own, or what its MALLOC_*_ / GLIBC_TUNABLES "
                        "environment variables say (for comparisons: benchmarks/index_scale.py --allocator)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _check_args(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if not args.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if getattr(args, "max_audio_queue", 0) < 0:
        raise InputError(f"--max-audio-queue must be >= 0, got {args.max_audio_queue}")
    if getattr(args, "max_text_queue", 1) < 1:
        raise InputError(f"--max-text-queue must be >= 1, got {args.max_text_queue}")
    if getattr(args, "audio_batch", 1) < 1:
        raise InputError(f"--audio-batch must be >= 1, got {args.audio_batch}")
    for name in getattr(args, "allowed_host", None) or []:
        if not name.strip() or any(c in name for c in " /\\@?#,"):
            raise InputError(f"--allowed-host {name!r}: expected a host name or address such as "
                             "myhost.lan or 192.168.1.5 (no scheme, path or spaces)")
    if not Path(args.index).exists():
        raise InputError(f"index {args.index}: not found; build one with `hade index`")


is_loopback_host = is_loopback_name  # the name benchmarks/load.py and older callers use


def cmd_serve(args: argparse.Namespace) -> int:
    """Open the index and run uvicorn until interrupted. Errors are InputError (HadeError)."""
    import torch
    import uvicorn

    from hade.index import Index
    from hade.serve.app import create_app
    from hade.serve.concurrency import tune_allocator
    from hade.serve.guards import browse_url
    from hade.serve.limits import Limits

    _check_args(args)
    threads = args.threads if args.threads is not None else default_threads()
    root = getattr(args, "root", None)
    if root is not None and not Path(root).is_dir():
        raise InputError(f"--root {root}: not a folder")
    # Only the server's text thread runs multi-threaded torch work. An OpenMP team formed here, on the main
    # thread, by opening the index would stay alive beside the text thread's; with more OpenMP threads than
    # cores, libgomp stops spin-waiting and every parallel region then waits for its threads to wake:
    # encoding a caption took 13.6 ms instead of 7.1 (benchmarks/omp_teams.py).
    torch.set_num_threads(1)
    index = Index.open(args.index, device=args.device, compute=args.compute,
                       **({"root": root} if root is not None else {}))
    if args.allocator == "tuned":
        tune_allocator()  # before uvicorn starts its threads, so that every thread's heap follows it
    limits = Limits(max_audio_queue=args.max_audio_queue, max_text_queue=args.max_text_queue,
                    audio_batch=args.audio_batch)
    app = create_app(index, max_upload_bytes=int(args.max_upload_mb * 2**20), threads=threads,
                     allowed_hosts=args.allowed_host, bound_host=args.host, limits=limits)
    if not is_loopback_host(args.host):
        print(f"hade serve: warning: listening on {args.host}; the index's audio is readable by anyone "
              "who can reach this address (no authentication)", file=sys.stderr)
        if args.host in ("0.0.0.0", "::") and not args.allowed_host:
            print("hade serve: note: only loopback Host names are accepted; add the names clients use with "
                  "--allowed-host NAME", file=sys.stderr)
    if "*" in args.allowed_host:
        print("hade serve: warning: --allowed-host '*' disables the Host check; any web page the user visits "
              "can read the index through DNS rebinding", file=sys.stderr)
    print(f"hade serve: {len(index)} windows from {args.index}; open {browse_url(args.host, args.port)}", flush=True)
    # One worker process: the model is loaded once, inference is serialised inside the app.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0


__all__ = ["add_serve_parser", "cmd_serve", "default_threads"]
