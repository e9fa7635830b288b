#!/usr/bin/env python3
"""Why `hade serve` opens its index with one torch thread: caption encoding on a worker thread, with and
without a second OpenMP team in the process.

    .venv/bin/python benchmarks/omp_teams.py --index runs/index_scale/evaluation.coded [--threads 2]

Each scenario runs in a fresh subprocess (an OpenMP team, once formed, lives as long as its thread):
- `worker only`: the index is opened with 1 thread on the main thread; captions are encoded on a worker
  thread with `--threads` threads (what `hade serve` does since session 8);
- `main first`: the main thread opens the index and encodes one caption with `--threads` threads, as
  `hade serve` did before; then the worker encodes (two teams: more OpenMP threads than cores on a
  2-core machine, and libgomp then stops spin-waiting);
- `one thread`: the worker encodes with 1 thread (no team at all).
Printed: the median milliseconds of `model.encode_text([caption])` over `--queries` captions after 5
warm-up ones, and each scenario's ratio to `worker only`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("worker only", "main first", "one thread")


def measure(index: str, scenario: str, threads: int, queries: int) -> float:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from hade.index import Index

    torch.set_num_threads(threads if scenario == "main first" else 1)
    ix = Index.open(index)
    model = ix.model
    if scenario == "main first":
        with torch.inference_mode():
            model.encode_text(["the main thread forms its team"])
    worker_threads = 1 if scenario == "one thread" else threads

    def encode(caption: str) -> float:
        torch.set_num_threads(worker_threads)
        with torch.inference_mode():
            t = time.perf_counter()
            model.encode_text([caption])
            return (time.perf_counter() - t) * 1000

    captions = [f"a dog barks while rain falls on a tin roof, take {i}" for i in range(queries + 5)]
    with ThreadPoolExecutor(1) as worker:
        ms = [worker.submit(encode, c).result() for c in captions]
    ix.close()
    return statistics.median(ms[5:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="an index (its model encodes the captions)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)  # one subprocess's part
    args = p.parse_args()
    if args.scenario:
        print(json.dumps(measure(args.index, args.scenario, args.threads, args.queries)))
        return
    results = {}
    for scenario in SCENARIOS:
        out = subprocess.run([sys.executable, __file__, "--index", args.index, "--threads", str(args.threads),
                              "--queries", str(args.queries), "--scenario", scenario],
                             check=True, capture_output=True, text=True).stdout
        results[scenario] = json.loads(out.strip().splitlines()[-1])
    base = results["worker only"]
    for scenario, ms in results.items():
        print(f"{scenario:12s} encode_text p50 {ms:6.2f} ms   x worker only {ms / base:.2f}")


if __name__ == "__main__":
    main()
