"""Search benchmark: ANN recall + exact re-rank vs exhaustive scoring, on synthetic embeddings.

For each size (default 10k, 100k and 1M windows; `--sizes`), it draws clustered, L2-normalised D=256
embeddings (stored as float16, as an index stores them), builds the index's ANN (`hade.index.ann`:
exact flat below 50k windows, IVF above), and compares, for the same queries and the DP (cosine) head:

* exhaustive: `head.score` against every window, top-k;
* two-stage: ANN recall of `--candidates` windows, `head.score` on their stored rows, top-k —
  the path of `Index.search` (without SQLite look-ups and text encoding; see the end-to-end line).

It reports recall@k of the two-stage results against the exhaustive ones, the latency per query
(median / p95, one query at a time) and per query in batches of `--batch` queries, and the ratio.
Finally it builds a small real index (SynthCaps, the CPU demo model config with random audio weights)
and reports the end-to-end latency of a text query (encoding + ANN + re-rank + hit records).

    python benchmarks/search.py                     # all three sizes (~3-4 min on 2 shared cores)
    python benchmarks/search.py --sizes 10k,100k --queries 100 --skip-e2e
    python benchmarks/search.py --sizes 1M --kind ivfpq --memory-budget 96M --sweep 2 --skip-e2e   # IVF-PQ, ~4 min
    python benchmarks/search.py --sizes 10M --kind ivfpq --memory-budget 1G --candidates 100,200,400 --skip-e2e  # ~1 h

Per size it also prints the ANN's code ('sq8' or 'pq<M>x<bits>', chosen from the count and
`--memory-budget` as `hade.index.ann.choose_ivfpq` does), its serialised size, the build time (k-means
training and block-wise adding apart), the peak RSS of the process after the build and at the end, and the
recall@k of the ANN's own order (no re-rank) next to the two-stage one. `--candidates 100,200,400` gives a
row per re-rank depth (and `--sweep` per nprobe multiple).

Memory: the store is one float16 [N, D] array (5 GB at 10M x 256); `build_ann` reads it 262 144 rows at a
time as float32. Up to `--full-max` windows (default 2M) the exhaustive side scores a float32 copy, as
`head.score` over the whole store; above it the exact top-k comes from float16 blocks of `--block` rows
(default 1M, running top-k) and the exhaustive latencies are those over the first block x N/block
(marked "estimated"). Peak RSS ≈ 2 bytes·N·D + the ANN + one float32 block + faiss's training sample.

Measured (OMP_NUM_THREADS=1, 1 thread, 2 cores shared with two training jobs, so wall ≈ 2x CPU time;
100 queries; log in runs/logs/ann10m.log):

    python benchmarks/search.py --sizes 1M --kind ivfpq --memory-budget 96M --sweep 2 --skip-e2e --full-max 0
      pq64x8, 4096 lists, nprobe 32: build 178 s (train 113 + add 64), 72.9 MiB, peak RSS 2.5 GiB;
      recall@10 0.994 (ANN-only 0.66); 2.1 ms wall / 1.7 ms CPU median a query (exhaustive 84 ms CPU)
    python benchmarks/search.py --sizes 3M --kind ivfpq --memory-budget 300M --sweep 2 --skip-e2e
      pq64x8, 8192 lists, nprobe 64: build 470 s (train 185 + add 285; 258 s = 107 + 151 once the machine
      was idle), 214 MiB, peak RSS 4.0 GiB; recall@10 0.955 (ANN-only 0.66), 6-10 ms CPU median a query
      (exhaustive ~250-310 ms CPU, estimated). --candidates 200 or 400: 0.956, so the misses are lists not
      probed, not the PQ order; --sweep 2,4: nprobe 128 0.970 (18 ms), nprobe 256 0.995 (24 ms CPU).
    python benchmarks/search.py --sizes 10M --kind ivfpq --memory-budget 1G --sweep 2,4 --skip-e2e --threads 2
      pq64x8, 16 384 lists (idle machine, 2 threads): build 716 s (train 226 + add 491), 703 MiB, peak RSS
      7.7 GiB after the build, 8.7 GiB at the end; recall@10 0.879 at the default nprobe 128 (21.8 ms
      median), 0.919 at 256 (32.1 ms), 0.949 at 512 (48.4 ms); exhaustive ~472 ms (estimated). A first
      1-thread attempt beside two 5 GiB training jobs was OOM-killed at 6.3M rows added.
    python benchmarks/search.py --sizes 10M --kind ivfpq --memory-budget 1G --sweep 0.5 --skip-e2e --threads 1
      session 7, with nprobe growing with N (default 1 024 at 10M) and faiss's 1 GiB precomputed table
      left out of the 1 GiB budget (1 thread, beside other jobs): build 3 083 s (train 1 024 + add 2 058),
      703 MiB, peak RSS 6.7 GiB after the build (7.7 at the end); recall@10 0.989 at nprobe 1 024
      (59 ms median, 1 thread), 0.949 at 512 (34 ms); exhaustive 786 ms (estimated): 13x faster at 0.989.

Targets: recall@10 >= 0.98 at <= 1/20 of the exhaustive latency at 1M. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hade.index.ann import DEFAULT_THRESHOLD, ann_search, build_ann  # noqa: E402
from hade.models.heads.dp import DPHead  # noqa: E402


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "km" else text) * scale)


def parse_bytes(text: str) -> int:
    """'512M', '2G', '300000' -> bytes (binary units)."""
    text = text.strip().upper().rstrip("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(float(text[:-1] if text[-1:] in "KMG" else text) * scale)


def clustered(n: int, dim: int, rng: np.random.Generator, spread: float = 1.0, per_cluster: int = 200) -> np.ndarray:
    """[n, dim] float16 unit rows around n/per_cluster random centres (noise of norm ~`spread` per row)."""
    clusters = max(8, n // per_cluster)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(clusters, 2.0))  # unequal cluster sizes
    out = np.empty((n, dim), dtype=np.float16)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        x = centres[rng.choice(clusters, b - a, p=weights)]
        noise = rng.standard_normal((b - a, dim), dtype=np.float32)
        x += spread * noise / np.sqrt(dim)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_queries(data: np.ndarray, q: int, rng: np.random.Generator, noise: float = 1.2) -> np.ndarray:
    """Text-like queries: a stored window plus a random unit direction of weight `noise` (cos ~0.64)."""
    x = data[rng.choice(len(data), q, replace=False)].astype(np.float32)
    u = rng.standard_normal(x.shape, dtype=np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    x += noise * u
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exhaustive(head: DPHead, queries: torch.Tensor, stored: torch.Tensor, k: int) -> np.ndarray:
    """Top-k ids [Q, k] by head.score against every stored row."""
    scores = head.score({"embed": queries}, {"embed": stored})
    return torch.topk(scores, k, dim=1).indices.numpy()


def exact_blocks(head: DPHead, queries: torch.Tensor, stored16: np.ndarray, k: int, block: int) -> np.ndarray:
    """Top-k ids [Q, k] by head.score against every row of stored16 [N, D] float16, `block` rows (converted
    to float32) at a time with a running top-k: the exhaustive result without a float32 copy of the store."""
    best_s = torch.full((len(queries), 0), -torch.inf)
    best_i = torch.zeros((len(queries), 0), dtype=torch.int64)
    for a in range(0, len(stored16), block):
        rows = torch.from_numpy(stored16[a:a + block].astype(np.float32))
        s, i = torch.topk(head.score({"embed": queries}, {"embed": rows}), min(k, len(rows)), dim=1)
        del rows  # before the next block is converted: one float32 block at a time
        best_s, pick = torch.topk(torch.cat([best_s, s], 1), min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, i + a], 1), 1, pick)
    return best_i.numpy()


def two_stage(head: DPHead, ann, params, queries: np.ndarray, stored16: np.ndarray, k: int, candidates: int,
              nprobe: int | None) -> np.ndarray:
    """ANN recall of `candidates` ids, exact head.score on their float16 rows, top-k ids [Q, k]."""
    _, cand = ann_search(ann, params, queries, candidates, nprobe)
    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(len(queries)):
        ids = cand[i][cand[i] >= 0]
        rows = torch.from_numpy(stored16[ids].astype(np.float32))
        s = head.score({"embed": torch.from_numpy(queries[i:i + 1])}, {"embed": rows})[0]
        top = torch.topk(s, min(k, len(ids))).indices.numpy()
        out[i, :len(top)] = ids[top]
        out[i, len(top):] = -1
    return out


class Times:
    """Per-call milliseconds: wall clock, and CPU time of this thread (what an idle core would take;
    on a shared machine the wall clock also counts waiting for a core)."""

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        self.wall, self.cpu = np.array(wall) * 1000.0, np.array(cpu) * 1000.0

    def scaled(self, factor: float) -> "Times":
        """These times x factor (an exhaustive pass over one block -> over the whole store)."""
        return Times(self.wall * factor / 1000.0, self.cpu * factor / 1000.0)


def timed(fn, items) -> tuple[list, Times]:
    results, wall, cpu = [], [], []
    for item in items:
        t, c = time.perf_counter(), time.thread_time()
        results.append(fn(item))
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return results, Times(wall, cpu)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serialised_mb(ann) -> float:
    """The ANN's size as `save_ann` writes it, MiB (through a temporary file: no second copy in memory)."""
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(ann, str(Path(tmp) / "ann.faiss"))
        return (Path(tmp) / "ann.faiss").stat().st_size / 2**20


def build_timed(stored: np.ndarray, args: argparse.Namespace) -> tuple[object, object, dict]:
    """build_ann on stored [N, D] (float32, or float16 read block-wise) -> (ann, params, build figures)."""
    n, marks = len(stored), {}
    start = time.perf_counter()

    def progress(stage: str, count: int) -> None:
        marks[stage] = time.perf_counter() - start
        if args.log_progress and (stage == "train" or count == n or count % (args.log_progress * 262144) == 0):
            print(f"# {n}: {stage} {count} at {marks[stage]:.0f} s, peak RSS {peak_rss_mb():.0f} MiB", flush=True)

    ann, params = build_ann(stored, np.arange(n, dtype=np.int64), threshold=args.threshold, kind=args.kind,
                            memory_budget=args.memory_budget, progress=progress)
    build_s = time.perf_counter() - start
    info = {"build_s": build_s, "train_s": marks.get("train", 0.0), "rss_mb": peak_rss_mb(),
            "ann_mb": serialised_mb(ann)}
    info["add_s"] = build_s - info["train_s"] if "train" in marks else build_s
    return ann, params, info


def exhaustive_side(head: DPHead, qt: torch.Tensor, stored16: np.ndarray, args: argparse.Namespace,
                    batches: list[slice]) -> tuple[np.ndarray, Times, Times, bool]:
    """Exhaustive top-k ids [Q, k] and its single/batched times; above --full-max windows the top-k comes from
    float16 blocks and the times are those over the first --block rows x N/rows (estimated: True)."""
    n, k = len(stored16), args.k
    if n <= args.full_max:
        stored = torch.from_numpy(stored16.astype(np.float32))
        ex, ex_ms = timed(lambda i: exhaustive(head, qt[i:i + 1], stored, k)[0], range(len(qt)))
        _, ex_b = timed(lambda s: exhaustive(head, qt[s], stored, k), batches)
        return np.stack(ex), ex_ms, ex_b, False
    ex = exact_blocks(head, qt, stored16, k, args.block)
    block = torch.from_numpy(stored16[:args.block].astype(np.float32))
    _, ex_ms = timed(lambda i: exhaustive(head, qt[i:i + 1], block, k)[0], range(len(qt)))
    _, ex_b = timed(lambda s: exhaustive(head, qt[s], block, k), batches)
    del block
    factor = n / min(n, args.block)
    return ex, ex_ms.scaled(factor), ex_b.scaled(factor), True


def recall_at(truth: np.ndarray, got: np.ndarray, k: int) -> float:
    """Mean |top-k ∩ truth top-k| / k over the queries; truth, got [Q, >=k] ids."""
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(truth, got)]))


def bench_size(n: int, args: argparse.Namespace, head: DPHead) -> list[dict]:
    """One row per nprobe (the index's default first, then the --sweep multiples for IVF). Memory: the
    float16 store, the ANN, and a float32 copy of the store only up to --full-max windows."""
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    stored16 = clustered(n, args.dim, rng, args.spread)
    queries = make_queries(stored16, args.queries, rng, args.query_noise)
    gen_s = time.perf_counter() - t
    ann, params, info = build_timed(stored16, args)
    qt = torch.from_numpy(queries)
    k = args.k
    batches = [slice(a, a + args.batch) for a in range(0, len(queries), args.batch)]
    rows = []
    with torch.inference_mode():
        ex, ex_ms, ex_b, estimated = exhaustive_side(head, qt, stored16, args, batches)
        probes = [args.nprobe or params.nprobe]
        if params.kind == "ivf":
            probes += [max(1, int(round(probes[0] * m))) for m in args.sweep]
        for nprobe, c in [(p, c) for p in probes for c in args.candidates]:
            ts, ts_ms = timed(lambda i: two_stage(head, ann, params, queries[i:i + 1], stored16, k, c, nprobe)[0],
                              range(len(queries)))
            _, ts_b = timed(lambda s: two_stage(head, ann, params, queries[s], stored16, k, c, nprobe), batches)
            row = {"n": n, "kind": params.kind if params.kind == "flat" else params.code, "nlist": params.nlist,
                   "nprobe": nprobe if params.nlist else 0, "candidates": c, "gen_s": gen_s, **info,
                   "recall": recall_at(ex, ts, k),
                   "ann_recall": recall_at(ex, ann_search(ann, params, queries, k, nprobe)[1], k),
                   "estimated": estimated, "default": not rows}
            for clock in ("wall", "cpu"):
                ex_c, ts_c = getattr(ex_ms, clock), getattr(ts_ms, clock)
                row[clock] = {"ex_med": np.median(ex_c), "ex_p95": np.percentile(ex_c, 95),
                              "ts_med": np.median(ts_c), "ts_p95": np.percentile(ts_c, 95),
                              "ex_batch": getattr(ex_b, clock).sum() / len(queries),
                              "ts_batch": getattr(ts_b, clock).sum() / len(queries)}
            rows.append(row)
    for row in rows:
        row["end_rss_mb"] = peak_rss_mb()
    return rows


def end_to_end(args: argparse.Namespace) -> dict:
    """p50/p95 of Index.search for text queries on a small real index (htsat-cpu + MiniLM, untrained head)."""
    import hade
    from hade.checkpoint import save_model
    from hade.config import ModelConfig
    from hade.data.synthcaps import generate
    from hade.index import Index, build_index

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_model(hade.create_model(ModelConfig(audio_encoder="htsat-cpu", text_encoder="minilm")), tmp / "ckpt")
        generate(tmp / "data", clips=args.e2e_clips, sample_rate=16000, duration=8.0, progress=False)
        t = time.perf_counter()
        stats = build_index(tmp / "data", tmp / "idx", tmp / "ckpt", progress=False)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        again = build_index(tmp / "data", tmp / "idx", progress=False)
        reindex_s = time.perf_counter() - t
        index = Index.open(tmp / "idx")
        texts = ["a dog barks while rain falls", "a bell rings twice", "birds chirp then a car passes",
                 "an engine idles loudly", "footsteps on gravel", "a door slams shut", "thunder rumbles"]
        index.search(texts[0])
        _, ms = timed(lambda i: index.search(texts[i % len(texts)], k=10, candidates=100), range(50))
        index.close()
    return {"files": stats.files, "windows": stats.windows, "build_s": build_s, "reindex_s": reindex_s,
            "reindex_encoded": again.encoded_windows, "med": np.median(ms.wall), "p95": np.percentile(ms.wall, 95),
            "cpu_med": np.median(ms.cpu), "cpu_p95": np.percentile(ms.cpu, 95)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1M", help="comma-separated window counts (k/M suffixes)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=100, help="queries per size")
    p.add_argument("--batch", type=int, default=50, help="queries per batch for the batched timing")
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--candidates", type=lambda t: [int(x) for x in t.split(",")], default=[100],
                   help="windows the ANN recalls for the exact re-rank; a comma list gives a row per count")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="flat below, IVF from this size")
    p.add_argument("--kind", choices=("auto", "flat", "ivf", "ivfpq"), default="auto",
                   help="ANN kind (auto: flat below --threshold, IVF 8-bit, IVF-PQ over --memory-budget)")
    p.add_argument("--memory-budget", type=parse_bytes, default=None, help="ANN memory budget, e.g. 1G (IVF-PQ)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists per query (default: the index's)")
    p.add_argument("--sweep", type=lambda t: [float(x) for x in t.split(",") if x], default=[0.5, 2.0],
                   help="extra IVF rows at these multiples of the default nprobe ('' for none)")
    p.add_argument("--threads", type=int, default=1, help="torch and faiss threads (1: latency per core)")
    p.add_argument("--spread", type=float, default=1.0, help="within-cluster noise (1.0: cos ~0.7 to the centre)")
    p.add_argument("--query-noise", type=float, default=1.2, help="query = window + this x random unit vector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-max", type=parse_size, default=parse_size("2M"),
                   help="largest size scored exhaustively from a float32 copy; above it the exact top-k comes from "
                        "float16 blocks and the exhaustive latency is estimated from one block")
    p.add_argument("--block", type=parse_size, default=parse_size("1M"), help="rows per exhaustive block")
    p.add_argument("--log-progress", type=int, default=0,
                   help="print the build's progress every this many 262144-row blocks (0: no)")
    p.add_argument("--e2e-clips", type=int, default=24)
    p.add_argument("--skip-e2e", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    head = DPHead([32, 64, 128, 256], 384, args.dim).eval()
    print(f"# hade search benchmark: D={args.dim}, k={args.k}, candidates={','.join(map(str, args.candidates))}, "
          f"{args.queries} queries/size, {args.threads} thread(s), {os.cpu_count()} CPUs; times in ms per query")
    print(f"{'windows':>9} {'ann':>7} {'nlist':>5} {'nprobe':>6} {'cand':>5} {'build s':>7} "
          f"{'recall@' + str(args.k):>9} "
          f"{'clock':>5} {'exh med':>8} {'exh p95':>8} {'2st med':>8} {'2st p95':>8} {'speed-up':>8} "
          f"{'exh/q bat':>9} {'2st/q bat':>9} {'speed-up':>8}")
    t0 = time.perf_counter()
    for size in args.sizes.split(","):
        for r in bench_size(parse_size(size), args, head):
            for clock in ("wall", "cpu"):
                t = r[clock]
                head_cols = (f"{r['n']:>9} {r['kind']:>7} {r['nlist']:>5} {r['nprobe']:>6} {r['candidates']:>5}"
                             f"{' ' if r['default'] else '*'}{r['build_s']:>7.1f} {r['recall']:>9.4f}"
                             if clock == "wall" else " " * 61)
                print(f"{head_cols} {clock:>5} {t['ex_med']:>8.2f} {t['ex_p95']:>8.2f} {t['ts_med']:>8.3f} "
                      f"{t['ts_p95']:>8.3f} {t['ex_med'] / t['ts_med']:>7.1f}x {t['ex_batch']:>9.3f} "
                      f"{t['ts_batch']:>9.3f} {t['ex_batch'] / t['ts_batch']:>7.1f}x", flush=True)
            print(f"{'':>9} ann-only recall@{args.k} {r['ann_recall']:.4f}; ANN {r['ann_mb']:.1f} MiB serialised; "
                  f"build {r['build_s']:.0f} s = train {r['train_s']:.0f} s + add {r['add_s']:.0f} s; peak RSS "
                  f"{r['rss_mb']:.0f} MiB after the build, {r['end_rss_mb']:.0f} MiB at the end; data generated in "
                  f"{r['gen_s']:.1f} s" + ("; exhaustive times estimated: first "
                                          f"{min(r['n'], args.block)} rows x {r['n'] / min(r['n'], args.block):.1f}"
                                          if r["estimated"] else ""), flush=True)
    print("  * nprobe other than the index's default or candidates other than the first (recall/latency trade-off). "
          "speed-up = exhaustive median / two-stage median (single queries), then per-query time in batches. "
          "wall = wall clock; cpu = CPU time of the thread (what an idle core takes; the wall clock of a shared "
          "machine also counts waiting).")
    if not args.skip_e2e:
        e = end_to_end(args)
        print(f"end-to-end text query on a real index ({e['files']} files, {e['windows']} windows, htsat-cpu + "
              f"MiniLM, DP head, random audio weights): median {e['med']:.1f} ms, p95 {e['p95']:.1f} ms wall "
              f"(CPU {e['cpu_med']:.1f} / {e['cpu_p95']:.1f} ms); "
              f"build {e['build_s']:.1f} s, unchanged re-index {e['reindex_s'] * 1000:.0f} ms "
              f"({e['reindex_encoded']} windows encoded, {e['build_s'] / max(e['reindex_s'], 1e-9):.0f}x faster)")
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
