"""What read-time verification costs: open, first query and later queries of a 100k-window index, with and
without hashing each file the first time the process reads it (`hade.index.checksums`).

The index is synthetic in its contents but written through the store API like a real one: a tiny tha+dcr
model (the test preset; its encoder is fast, so the query itself is cheap and the verification's share
is the largest it can be) indexes a generated SynthCaps folder with token codes (`--token-codec PQ16`),
then `benchmarks/index_scale.py`'s `grow` appends copies of its chunks up to `--windows` and rebuilds the
ANN (IVF above 50k). Every kind of verified file is there: chunk arrays, codes, a codec set, the ANN.

Each measurement runs in a fresh process (verdicts are per process), alternating the two modes
`--repeats` times: wall ms of `Index.open`, of the first `search` (k=10, 100 candidates) and the median
of the next `--queries` searches, and the ms spent inside `Store.verify_read` in each (hashing, or
waiting for the background thread that `Index.open` starts on the chunk arrays before loading the
model). "off" replaces `Store.verify_read` and that background start with no-ops (no production switch
exists). The page cache is warm (the index was just written or read): cold-cache reads cost the same
disk reads with or without verification for the bytes a query touches, plus, with it, the rest of each
touched file.

The index's own bytes per window are small (tiny model); so the script also hashes a file of
`--bytes-per-window` x windows bytes (default 12 784: a window of the CPU model's tha+dcr with
OPQ32,IVF256,PQ32 token codes, its pooled vector and factors; the table in `hade.index.tokens`) with
XXH3-128 and sha256: what a first query at 100k windows of that model hashes at most.

    python benchmarks/verify.py --out runs/verify [--windows 100000]

Prints one JSON line per measurement and a summary table; OUT/verify.json keeps everything.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

QUERIES = ["a dog barks while rain falls", "a bell rings twice", "footsteps on gravel", "an engine idles",
           "birds sing in the morning", "a door slams", "water flows in a stream", "people talk in a cafe"]


def build(out: Path, windows: int) -> Path:
    """The grown index under OUT/index (reused when it already holds `windows` windows)."""
    import dataclasses

    import torch

    import hade
    from hade.checkpoint import save_model
    from hade.config import ModelConfig
    from hade.data.synthcaps import generate
    from hade.index import build_index
    from index_scale import grow, windows_in

    dest = out / "index"
    if (dest / "index.sqlite").is_file() and windows_in(dest) == windows:
        return dest
    torch.manual_seed(0)
    cfg = ModelConfig(audio_encoder="htsat-test", text_encoder="minilm", text_pretrained=False,
                      text_overrides={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                                      "intermediate_size": 64}, embed_dim=64, max_text_tokens=24)
    save_model(hade.create_model(dataclasses.replace(cfg, head="tha+dcr", text_config=None)), out / "ckpt")
    generate(out / "data", clips=100, sample_rate=8000, duration=2.0, progress=False)
    build_index(out / "data", out / "base", out / "ckpt", window=0.5, hop=0.25, token_codec="PQ16", progress=False)
    print(json.dumps({"grown": grow(out / "base", dest, windows)}), flush=True)
    return dest


def child(index_dir: Path, mode: str, queries: int) -> None:
    """One fresh process: open, first query, later queries; prints a JSON line."""
    import torch

    from hade.index import Index
    from hade.index.store import Store

    torch.set_num_threads(1)
    spent = [0.0]  # seconds inside Store.verify_read (hashing and comparing; 0 with it off)
    if mode == "off":
        Store.verify_read = lambda self, rel: None  # type: ignore[method-assign]
        Store.verify_later = lambda self, rels, stop: None  # type: ignore[method-assign]
    else:
        real = Store.verify_read

        def timed(self, rel: str) -> None:
            t0 = time.perf_counter()
            try:
                real(self, rel)
            finally:
                spent[0] += time.perf_counter() - t0

        Store.verify_read = timed  # type: ignore[method-assign]
    t = time.perf_counter()
    index = Index.open(index_dir)
    opened, verify_open = (time.perf_counter() - t) * 1000, spent[0] * 1000
    t = time.perf_counter()
    index.search(QUERIES[0], k=10, candidates=100)
    first, verify_first = (time.perf_counter() - t) * 1000, spent[0] * 1000 - verify_open
    later = []
    for i in range(queries):
        t = time.perf_counter()
        index.search(QUERIES[1 + i % (len(QUERIES) - 1)], k=10, candidates=100)
        later.append((time.perf_counter() - t) * 1000)
    index.close()
    print(json.dumps({"mode": mode, "open_ms": round(opened, 1), "first_ms": round(first, 1),
                      "later_p50_ms": round(statistics.median(later), 2), "verify_open_ms": round(verify_open, 1),
                      "verify_first_ms": round(verify_first, 1), "verify_later_ms": round(spent[0] * 1000 - verify_open
                                                                                         - verify_first, 1)}))


def hash_rate(path: Path, size: int) -> dict:
    """Seconds to hash a `size`-byte file (page cache warm) with XXH3-128 and sha256."""
    from hade.index.checksums import file_digests, xxh3_file

    block = np.random.default_rng(0).integers(0, 256, 1 << 24, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for start in range(0, size, len(block)):
            f.write(block[:min(len(block), size - start)])
    xxh3_file(path)  # warm the page cache
    t = time.perf_counter()
    xxh3_file(path)
    fast = time.perf_counter() - t
    t = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(4 << 20):
            h.update(data)
    slow = time.perf_counter() - t
    t = time.perf_counter()
    file_digests(path)
    both = time.perf_counter() - t
    path.unlink()
    return {"bytes": size, "xxh3_ms": round(fast * 1000, 1), "sha256_ms": round(slow * 1000, 1),
            "write_time_both_ms": round(both * 1000, 1), "xxh3_GBps": round(size / fast / 1e9, 2),
            "sha256_GBps": round(size / slow / 1e9, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "verify")
    p.add_argument("--windows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bytes-per-window", type=int, default=12_784)
    p.add_argument("--child", nargs=2, metavar=("INDEX", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.queries)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    index_dir = build(args.out, args.windows)
    files = [f for f in index_dir.rglob("*") if f.is_file() and f.name != "index.sqlite" and "model" not in f.parts]
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            out = subprocess.run([sys.executable, __file__, "--child", str(index_dir), mode, "--queries",
                                  str(args.queries)], capture_output=True, text=True, env=env, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(out.stdout.strip(), flush=True)
    keys = ("open_ms", "first_ms", "later_p50_ms", "verify_open_ms", "verify_first_ms", "verify_later_ms")
    summary = {mode: {k: statistics.median(r[k] for r in rs) for k in keys} for mode, rs in runs.items()}
    size = args.bytes_per_window * args.windows
    result = {"windows": args.windows, "index_bytes": sum(f.stat().st_size for f in files),
              "summary": summary, "runs": runs, "hash": hash_rate(args.out / "hash.bin", size)}
    (args.out / "verify.json").write_text(json.dumps(result, indent=2))
    print(f"\n{args.windows} windows, {result['index_bytes'] / 2**20:.1f} MiB of verified files "
          f"(arrays, codes, codec set, ANN); medians of {args.repeats} fresh processes, ms:")
    print(f"{'verification':<14}{'open':>10}{'first query':>14}{'later p50':>12}   hashing inside: open, first, later")
    for mode in ("off", "on"):
        s = summary[mode]
        print(f"{mode:<14}{s['open_ms']:>10.1f}{s['first_ms']:>14.1f}{s['later_p50_ms']:>12.2f}   "
              f"{s['verify_open_ms']:.1f}, {s['verify_first_ms']:.1f}, {s['verify_later_ms']:.1f}")
    h = result["hash"]
    print(f"\nhashing {h['bytes'] / 1e9:.2f} GB ({args.bytes_per_window} bytes x {args.windows} windows), page cache "
          f"warm: XXH3-128 {h['xxh3_ms']} ms ({h['xxh3_GBps']} GB/s), sha256 {h['sha256_ms']} ms "
          f"({h['sha256_GBps']} GB/s); both at write time {h['write_time_both_ms']} ms")


if __name__ == "__main__":
    main()
