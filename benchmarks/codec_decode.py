#!/usr/bin/env python3
"""Decoding cost of token codecs, side by side: what a re-rank pays to decode its candidates' tokens.

For each index folder given, loads its codec set (the first under ``codecs/``) and times
`TokenCodec.decode` of `--windows` windows' worth of codes per token key (random tokens encoded first, so
any index with a codec set will do), median of `--repeats`, on `--threads` faiss threads. Prints ms per
key and in all, and each codec's ratio to the first folder's. A codec with a rotation (OPQ) gets a second
line, "rotated": its decoding as a re-rank does it for a head that declares rotation_pairs (THA), which
leaves the tokens rotated and rotates the query's words instead.

    python benchmarks/codec_decode.py runs/index_scale/synth20s.coded.IVF256_PQ32 \\
        runs/index_scale/synth20s.coded runs/index_scale/synth20s.coded.OPQ32_IVF256_PQ32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hade.index.tokens import load_codecs  # noqa: E402

TOKENS_PER_WINDOW = {"tha_audio_0": 256, "tha_audio_1": 64, "tha_audio_2": 16}  # the CPU model's THA levels


def decode_ms(folder: Path, windows: int, repeats: int, rng: np.random.Generator,
              rotated: bool = False) -> tuple[str, dict[str, float]]:
    """(factory, {key: median ms to decode `windows` windows of that key}); with `rotated`, decoding that
    skips a codec's rotation (`TokenCodec.decode(rotated=True)`)."""
    sets = sorted(p for p in (folder / "codecs").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sets:
        raise SystemExit(f"{folder}: no codec set under codecs/ (an index built with --token-codec none?)")
    codecs = load_codecs(sets[0])
    out, factory = {}, ""
    for key, codec in sorted(codecs.items()):
        tokens = rng.standard_normal((windows, TOKENS_PER_WINDOW.get(key, 64), codec.dim)).astype(np.float32)
        codes = codec.encode(tokens)
        codec.decode(codes, rotated)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            codec.decode(codes, rotated)
            times.append((time.perf_counter() - t) * 1000)
        out[key], factory = float(np.median(times)), codec.info.factory
    return factory, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("indexes", type=Path, nargs="+", help="index folders with a token codec set")
    p.add_argument("--windows", type=int, default=100, help="candidates of one re-rank")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    first = None
    print(f"# decode of {args.windows} windows' tokens, median of {args.repeats}, {args.threads} faiss threads (ms)")
    for folder in args.indexes:
        sets = sorted(p for p in (folder / "codecs").iterdir() if p.is_dir() and not p.name.startswith("."))
        has_rotation = bool(sets) and any(c.rotation is not None for c in load_codecs(sets[0]).values())
        for rotated in (False, True) if has_rotation else (False,):
            factory, ms = decode_ms(folder, args.windows, args.repeats, rng, rotated)
            total = sum(ms.values())
            first = first or total
            keys = "  ".join(f"{k} {v:6.1f}" for k, v in ms.items())
            label = factory + (" rotated" if rotated else "")
            print(f"{label:30s} {keys}  all {total:6.1f}  x{total / first:5.1f}   ({folder})")


if __name__ == "__main__":
    main()
