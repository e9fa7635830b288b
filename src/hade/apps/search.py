"""`hade search INDEX "a dog barks" | --audio FILE | --like PATH`: two-stage search of an index (hade.index.search).

    hade search INDEX "a dog barks while rain falls" -k 10 [--candidates N] [--per-file] [--json]
    hade search INDEX --audio query.wav -k 10
    hade search INDEX --like animals/dog.wav [--at 12.5] [--same-file]   # more like an indexed file
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hade.apps.argtypes import positive_int, time_point
from hade.config import COMPUTE_DTYPES
from hade.errors import InputError
from hade.utils.jsonable import jsonable, printable


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade search` to a sub-parser set."""
    s = sub.add_parser("search", help="search an index by text or by example audio",
                       description="Two-stage search: ANN recall of --candidates windows, exact re-ranking with "
                                   "the index's head.")
    s.add_argument("index", type=Path, help="index folder written by `hade index`")
    s.add_argument("query", nargs="?", default=None, help="text query")
    s.add_argument("--audio", type=Path, default=None, help="search by example: an audio file")
    s.add_argument("--like", default=None, metavar="PATH",
                   help="more like an indexed file (its path as indexed, or inside --root): its stored "
                        "vectors, nothing re-encoded; the file's own windows are left out")
    s.add_argument("--at", type=time_point, default=None, metavar="SECONDS",
                   help="with --like: only the window of that file around this time")
    s.add_argument("--same-file", action="store_true",
                   help="with --like: other windows of the same file may be hits too")
    s.add_argument("-k", type=positive_int, default=10, help="results to show")
    s.add_argument("--candidates", type=positive_int, default=100, help="windows recalled by the ANN and re-ranked")
    s.add_argument("--per-file", action="store_true", help="one result per file (its best window)")
    s.add_argument("--exhaustive", action="store_true", help="score every window exactly (slow on large indexes)")
    s.add_argument("--nprobe", type=positive_int, default=None,
                   help="IVF lists visited per query (more = better recall)")
    s.add_argument("--root", type=Path, default=None, help="folder the indexed files live in now")
    s.add_argument("--device", default="cpu")
    s.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32",
                   help="query encoder precision (autocast; bf16 on CPUs with AMX/AVX512-BF16 or CUDA)")
    s.add_argument("--json", action="store_true", help="print JSON")
    return s


def run(args: argparse.Namespace) -> int:
    """Print the best windows for a text query or an --audio example."""
    if sum(q is not None for q in (args.query, args.audio, args.like)) != 1:
        raise InputError('give one of a text query, --audio FILE or --like PATH, '
                         'e.g. hade search INDEX "a dog barks"')
    if args.like is None and (args.at is not None or args.same_file):
        raise InputError("--at and --same-file go with --like PATH")
    from hade.index.search import Index

    index = Index.open(args.index, device=args.device, root=args.root, compute=args.compute)
    try:
        query = args.query if args.query is not None else args.audio if args.audio is not None else \
            index.like(args.like, at=args.at, same_file=args.same_file)
        hits = index.search(query, k=args.k, candidates=args.candidates, per_file=args.per_file,
                            exhaustive=args.exhaustive, nprobe=args.nprobe)
        if args.json:
            print(json.dumps(jsonable([{"rank": r, **h.to_dict(), "file": str(index.root / h.path)}
                                       for r, h in enumerate(hits, 1)]), indent=2, allow_nan=False))
        else:
            paths = [printable(h.path) for h in hits]
            width = max([len(p) for p in paths] + [4])
            print(f"{'rank':>4}  {'file':<{width}}  {'window':>17}  score")
            for r, (h, path) in enumerate(zip(hits, paths), 1):
                print(f"{r:>4}  {path:<{width}}  {h.start:7.2f}–{h.end:7.2f}s  {h.score:.4f}")
            if not hits:
                print("(no results: the index is empty)")
    finally:
        index.close()
    return 0
