"""Compressed token store end to end: ranking fidelity through `Index.search`, and latency and memory at 100k windows.

Issue #14's "must show" for a re-ranking head (default: the trained tha+dcr checkpoint of the Table 1
ablation), on real encoded windows:

1. **Fidelity** on each `--data` folder (SynthCaps layouts; e.g. the SynthCaps evaluation split, 72
   clips, and a 10k-window set of 20 s clips): the folder is indexed once with float16 tokens
   (``--token-codec none``); a copy is then compressed in place with each ``--codec`` (default: `hade
   index`'s; the upgrade path, which fits the same way as a fresh build: on the first 512 windows).
   For every caption of the folder (or `--queries` of them, evenly spaced), both indexes answer
   ``Index.search(caption, k=10, candidates=100)``: printed are the overlap of the top-10 windows,
   T2A R@1 / R@10 of the caption's file (``per_file=True``) and bytes per window.
2. **Scale**: the compressed copy of the last folder is grown to `--windows` windows (default 100k) by
   appending copies of its chunks through the store API (codes copied as they are; the pooled vectors
   get a little noise so that the ANN sees distinct points) and its ANN rebuilt (IVF above 50k). Then
   `--latency-queries` captions, one at a time: end-to-end `Index.search` latency in this process
   (text encoding + ANN + decoding and THA+DCR re-scoring of 100 candidates + hit records), and a
   `hade serve` subprocess answering ``GET /search`` — client-side latency and the server's resident
   memory (all, anonymous, and file-backed: the pages of the memory-mapped codes that queries touched).

    python benchmarks/index_scale.py --data runs/synthcaps/evaluation --data runs/synth20s --out runs/index_scale

Targets: top-10 overlap >= 0.95, R@1 and R@10 within 0.5 points; at 100k windows p95 < 100 ms and serve
RSS < 1.5 GB. Nothing is asserted; a JSON summary goes to OUT/index_scale.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hade.index import Index, Like, build_index  # noqa: E402
from hade.index.finalize import finalize  # noqa: E402
from hade.index.reprs import ReprTable  # noqa: E402
from hade.index.store import FileRecord, Store, WindowRecord  # noqa: E402
from hade.index.tokens import DEFAULT_FACTORY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def captions_of(folder: Path) -> list[tuple[str, str]]:
    """(caption, audio path relative to `folder`) for every caption of a Clotho-layout SynthCaps folder: the
    data set's root (every split, ``clotho_captions_<split>.csv`` beside them) or one split folder."""
    own = folder.parent / f"clotho_captions_{folder.name}.csv"
    files = [(own, "")] if own.is_file() else [
        (f, f.stem.removeprefix("clotho_captions_") + "/") for f in sorted(folder.glob("clotho_captions_*.csv"))]
    out = []
    for file, prefix in files:
        with open(file, newline="") as f:
            for row in csv.DictReader(f):
                out.extend((row[c], prefix + row["file_name"]) for c in row if c.startswith("caption_") and row[c])
    if not out:
        raise SystemExit(f"{folder}: no Clotho caption CSV (clotho_captions_<split>.csv) for its files")
    return out


def pick(items: list, n: int | None) -> list:
    """`n` items evenly spaced (all when n is None or larger)."""
    if n is None or n >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def coded_dir(out: Path, folder: Path, codec: str, first: bool) -> Path:
    """Where the compressed copy of `folder`'s index lives: ``NAME.coded`` for the first codec (the one the
    scale part grows), ``NAME.coded.<codec>`` for the others."""
    return out / (f"{folder.name}.coded" if first else f"{folder.name}.coded.{codec.replace(',', '_')}")


def fidelity(folder: Path, model: Path, out: Path, codecs: list[str], queries: int | None) -> list[dict]:
    """Float index of `folder` (built once; an up-to-date one is reused) and a compressed copy per codec;
    per codec, top-10 overlap and T2A R@1/R@10 through Index.search."""
    float_dir = out / f"{folder.name}.float"
    t = time.perf_counter()
    stats = build_index(folder, float_dir, model, progress=True, token_codec="none")
    build_s = time.perf_counter() - t
    caps = pick(captions_of(folder), queries)
    rows = []
    with Index.open(float_dir) as a:
        exact = [(caption, rel, [(h.path, h.start) for h in a.search(caption, k=10, candidates=100)],
                  [h.path for h in a.search(caption, k=10, candidates=100, per_file=True)]) for caption, rel in caps]
        float_bytes = a.info().bytes_per_window
    for i, codec in enumerate(codecs):
        dest = coded_dir(out, folder, codec, i == 0)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(float_dir, dest)
        t = time.perf_counter()
        # token_codec_min_tokens=0: fitted on the first 512 windows however few tokens they hold, as when the
        # figures in docs/search-scale.md were measured (a 72-clip split is below the default's threshold)
        build_index(folder, dest, progress=False, token_codec=codec, token_codec_min_tokens=0)
        row: dict = {"folder": str(folder), "codec": codec, "files": stats.files, "windows": stats.windows,
                     "captions": len(caps), "encode_s": round(build_s, 1),
                     "compress_s": round(time.perf_counter() - t, 1), "bytes_per_window[float16]": float_bytes}
        with Index.open(dest) as b:
            row[f"bytes_per_window[{codec}]"] = b.info().bytes_per_window
            overlap, ranks = [], {"float16": [], codec: []}
            for caption, rel, top, files in exact:
                coded = [(h.path, h.start) for h in b.search(caption, k=10, candidates=100)]
                overlap.append(len(set(top) & set(coded)) / max(1, len(top)))
                coded_files = [h.path for h in b.search(caption, k=10, candidates=100, per_file=True)]
                for name, got in (("float16", files), (codec, coded_files)):
                    ranks[name].append(got.index(rel) if rel in got else 10)
        row["ratio"] = round(float_bytes / row[f"bytes_per_window[{codec}]"], 1)
        row["top10_overlap"] = float(np.mean(overlap))
        for name, r in ranks.items():
            r = np.array(r)
            row[f"R@1[{name}]"], row[f"R@10[{name}]"] = 100 * float(np.mean(r < 1)), 100 * float(np.mean(r < 10))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def grow(src: Path, dest: Path, windows: int, seed: int = 0) -> dict:
    """Copy index `src` to `dest` and append copies of its windows (files ``copyN/…``) until `windows`."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    store = Store(dest)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    try:
        meta = store.meta()
        table = store.window_table()
        reprs = ReprTable(store, table["chunk"], table["row"], meta.repr_spec)
        base_files = {f.id: f for f in store.files("ok")}
        n0, copy = len(reprs), 0
        positions = np.arange(n0)
        arrays, codec_id = reprs.gather_stored(positions)
        while store.count_windows() < windows:
            copy += 1
            take = positions[:windows - store.count_windows()]
            part = {k: v[take].copy() for k, v in arrays.items()}
            pooled = part[meta.pooled_key].astype(np.float32)
            pooled += rng.standard_normal(pooled.shape).astype(np.float32) * 0.02
            part[meta.pooled_key] = (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(
                arrays[meta.pooled_key].dtype)
            cid = store.write_chunk(part)
            with store.transaction():
                store.register_chunk(cid, len(take), codec_id)
                new_ids = {}
                for fid in np.unique(table["file_id"][take]).tolist():
                    rec = base_files[fid]
                    new_ids[fid] = store.add_file(rec._replace(id=None, path=f"copy{copy}/{rec.path}"))
                store.put_windows(WindowRecord(new_ids[int(table["file_id"][p])], float(table["start"][p]),
                                               float(table["end"][p]), int(table["start_sample"][p]),
                                               int(table["end_sample"][p]), cid, i) for i, p in enumerate(take))
                store.bump_generation()
        ann = finalize(store, meta.ann_threshold or 50_000)
        return {"windows": store.count_windows(), "copies": copy, "ann": ann.kind, "nlist": ann.nlist,
                "nprobe": ann.nprobe, "grow_s": round(time.perf_counter() - t, 1),
                "arrays_mb": round(sum(f.stat().st_size for f in (dest / "arrays").rglob("*.npy")) / 2**20, 1)}
    finally:
        store.close()


def windows_in(index_dir: Path) -> int:
    store = Store(index_dir)
    try:
        return store.count_windows()
    finally:
        store.close()


def latency_stats(ms: list[float], phases: dict[str, list[float]], p95_of: tuple[str, ...] = ()) -> dict:
    """p50 / p95 of the per-query wall ms, the p50 of each phase (and the p95 of those in `p95_of`)."""
    out = {"p50_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}
    for name, values in phases.items():
        out[f"{name}_p50_ms"] = round(float(np.median(values)), 1)
        if name in p95_of:
            out[f"{name}_p95_ms"] = round(float(np.percentile(values, 95)), 1)
    return out


def timed_search(index_dir: Path, caps: list[str]) -> dict:
    """Median and p95 wall ms of Index.search(caption, k=10, candidates=100), one query at a time; and of
    as many "more like this" queries (`Like` of one window, evenly spaced ids) under "like"."""
    with Index.open(index_dir) as index:
        index.search(caps[0])
        ms, phases = [], {}
        for caption in caps:
            timing: dict[str, float] = {}
            t = time.perf_counter()
            index.search(caption, k=10, candidates=100, timing=timing)
            ms.append((time.perf_counter() - t) * 1000)
            for name, v in timing.items():
                phases.setdefault(name, []).append(v)
        like_ms = []
        for wid in index.table["id"][np.linspace(0, len(index) - 1, len(caps)).astype(int)]:
            t = time.perf_counter()
            index.search(Like((int(wid),)), k=10, candidates=100)
            like_ms.append((time.perf_counter() - t) * 1000)
    # with Index.search's own split of the time
    return {**latency_stats(ms, phases), "like": latency_stats(like_ms, {})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict:
    """The process's resident memory in MiB: all (RSS), anonymous (heap: what grows with leaks and caches)
    and file-backed (pages of memory-mapped index arrays and libraries that were read; clean, shared
    with the page cache and dropped by the kernel under pressure)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024)
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"], "file": fields["RssFile"]}


# `--allocator` presets: hade serve's own setting, or glibc configured by its environment variables
# (which `hade serve --allocator system` leaves alone). mmap-1m is hade serve's setting before session 7.
ALLOCATOR_PRESETS: dict[str, tuple[str, dict[str, str]]] = {
    "tuned": ("tuned", {}),
    "glibc": ("system", {}),
    "mmap-1m": ("system", {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
    "mmap-256m": ("system", {"MALLOC_MMAP_THRESHOLD_": str(256 << 20)}),
}
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def served(index_dir: Path, caps: list[str], threads: int, allocator: str = "tuned") -> dict:
    """`hade serve INDEX` in a subprocess: client-side latency of GET /search and the server's memory, with
    one of `ALLOCATOR_PRESETS`."""
    port = free_port()
    mode, variables = ALLOCATOR_PRESETS[allocator]
    env = {k: v for k, v in os.environ.items() if k not in _GLIBC_VARIABLES}
    env.update(variables, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, "-m", "hade.cli", "serve", str(index_dir), "--port", str(port),
                             "--threads", str(threads), "--log-level", "warning", "--allocator", mode], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"hade serve exited: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        rss_open = rss_mb(proc.pid)
        ms, server = [], {}
        for caption in [caps[0], *caps]:
            t = time.perf_counter()
            with urllib.request.urlopen(f"{base}/search?{urllib.parse.urlencode({'q': caption, 'k': 10})}",
                                        timeout=60) as r:
                r.read()
                timing = r.headers.get("server-timing", "")
            ms.append((time.perf_counter() - t) * 1000)
            for part in timing.split(","):  # "queue;dur=0.1, search;dur=80.2, handler;dur=80.5"
                name, _, dur = part.strip().partition(";dur=")
                if dur:
                    server.setdefault(name, []).append(float(dur))
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # without the warm-up query; with the server's own split of the time (Server-Timing)
    out = latency_stats(ms[1:], {name: v[1:] for name, v in server.items()}, p95_of=("search", "handler"))
    return {**out, "mb_after_open": rss_open, "mb_after_queries": rss}


def allocator_table(runs: dict[str, dict]) -> str:
    """The allocator settings side by side: p50 / p95 over HTTP and RSS, each with its ratio to the first."""
    first = next(iter(runs.values()))
    lines = ["| allocator | p50 ms | p95 ms | RSS MiB | p95 / first | RSS / first |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        rss = r["mb_after_queries"]["rss"]
        lines.append(f"| {name} | {r['p50_ms']} | {r['p95_ms']} | {rss} | {r['p95_ms'] / first['p95_ms']:.2f} | "
                     f"{rss / first['mb_after_queries']['rss']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "runs/ablate/rows/tha_dcr/seed0/checkpoints/best")
    p.add_argument("--data", type=Path, action="append", required=True, help="a SynthCaps folder (repeatable)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/index_scale")
    p.add_argument("--codec", action="append", default=None,
                   help="token codec factory (repeatable: each is compared with the same float index; the first is "
                        "the one grown for the scale part; default: hade index's, OPQ32,IVF256,PQ32)")
    p.add_argument("--queries", type=int, default=None, help="captions per folder for fidelity (default all)")
    p.add_argument("--windows", type=int, default=100_000, help="windows of the grown index (0: skip)")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch/faiss threads for the latency part")
    p.add_argument("--skip-fidelity", action="store_true", help="reuse OUT's indexes of the last --data folder")
    p.add_argument("--reuse-grown", action="store_true",
                   help="use OUT's grown index of --windows windows when it exists instead of growing it again")
    p.add_argument("--allocator", action="append", choices=sorted(ALLOCATOR_PRESETS), default=None,
                   help="hade serve's allocator setting (repeatable: measured one after another, each against the "
                        "first; default tuned). glibc: its own dynamic thresholds; mmap-1m / mmap-256m: a fixed "
                        "mmap threshold through MALLOC_MMAP_THRESHOLD_ (the trim threshold left to glibc)")
    args = p.parse_args()
    args.codec = args.codec or [DEFAULT_FACTORY]
    args.allocator = args.allocator or ["tuned"]
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": str(args.model), "codec": args.codec, "fidelity": []}
    if not args.skip_fidelity:
        for folder in args.data:
            summary["fidelity"].extend(fidelity(folder, args.model, args.out, args.codec, args.queries))
    if args.windows:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
        last = args.data[-1]
        grown = args.out / f"{last.name}.coded.{args.windows}"
        if args.reuse_grown and grown.is_dir() and windows_in(grown) == args.windows:
            summary["grown"] = {"windows": args.windows, "reused": str(grown)}
        else:
            summary["grown"] = grow(args.out / f"{last.name}.coded", grown, args.windows)
        print(json.dumps(summary["grown"]), flush=True)
        caps = [c for c, _ in pick(captions_of(last), args.latency_queries)]
        summary["search"] = timed_search(grown, caps)
        print("Index.search", json.dumps(summary["search"]), flush=True)
        summary["serve"] = {name: served(grown, caps, args.threads, name) for name in args.allocator}
        for name, out in summary["serve"].items():
            print(f"hade serve --allocator {name}", json.dumps(out), flush=True)
        if len(args.allocator) > 1:
            print(allocator_table(summary["serve"]), flush=True)
    (args.out / "index_scale.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
