"""`hade index` and `hade search` subcommands (wired into `hade.cli` by `add_index_parsers`).

    hade index DIR --ckpt CKPT --out INDEX [--window S] [--hop S] [--shard i/N] [--rebuild] [--aux-captions F]
               [--follow-external-links]
    hade index --check INDEX
    hade index merge OUT PART1 PART2 ...
    hade search INDEX "a dog barks while rain falls" -k 10 [--candidates N] [--per-file] [--json]
    hade search INDEX --audio query.wav -k 10

`hade index merge` is the `index` command whose first positional is the word `merge` (to index a folder
literally named merge, write ./merge).

`hade index --check INDEX` verifies an index folder without changing it: the database (`PRAGMA
integrity_check`), every chunk array, the ANN and the model copy against the sizes and sha256 recorded
when they were written. It prints each damaged file with what is wrong, then the command that repairs it
(the same `hade index DIR --out INDEX` that built it: a re-run repairs damage), and exits 0 when the index
is intact, 1 when it is damaged. A re-run prints what it repaired.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from hade.config import PRECISIONS
from hade.errors import HadeError, InputError


def add_index_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `index` and `search` subcommands to a `hade` subparsers object."""
    p = sub.add_parser("index", help="index a folder of audio files for search (or: index merge OUT PART...)",
                       description="Index (incrementally) the audio files under DIR into the index folder --out; "
                                   "`hade index merge OUT PART1 PART2 ...` joins indexes built with --shard.")
    p.add_argument("paths", nargs="+", metavar="DIR",
                   help="folder to index; or: merge OUT PART1 PART2 ...; or, with --check, the index folder")
    p.add_argument("--check", action="store_true",
                   help="verify the index folder given as DIR (sizes and checksums of every file it wrote, the "
                        "database, the ANN, the model copy); print what is damaged and the repair command; "
                        "exit 1 when damaged")
    p.add_argument("--follow-external-links", action="store_true",
                   help="also index files (and folders) that are symbolic links to places outside DIR "
                        "(skipped by default: the server would hand them out)")
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint directory (required for a new index)")
    p.add_argument("--out", type=Path, default=None, help="index folder (created or updated)")
    p.add_argument("--window", type=float, default=None, help="window seconds (default: model clip length, <= 10 s)")
    p.add_argument("--hop", type=float, default=None, help="hop seconds between windows (default: window/2)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per encoder batch (and per commit)")
    p.add_argument("--ann-threshold", type=int, default=None,
                   help="windows from which an IVF index replaces the exact flat one (default: the index's, "
                        "else 50000)")
    p.add_argument("--shard", default=None, help="i/N: index only slice i of N of the files (then `index merge`)")
    p.add_argument("--rebuild", action="store_true", help="discard the existing index (e.g. for a new model)")
    p.add_argument("--precision", choices=["float16", "float32"], default=None,
                   help="storage of the representations (default float16)")
    p.add_argument("--aux-captions", type=Path, default=None, metavar="FILE",
                   help="HCI+AC models: JSON/CSV of machine-generated captions keyed by path relative to DIR "
                        "or by file name; each file's windows are encoded with its caption")
    p.add_argument("--compute", choices=PRECISIONS, default="fp32",
                   help="encoder precision (autocast): bf16 on CPUs with AMX/AVX512-BF16 or CUDA, fp16 on CUDA")
    p.add_argument("--root", type=Path, default=None, help="merge: folder the merged files live in now")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("search", help="search an index by text or by example audio",
                       description="Two-stage search: ANN recall of --candidates windows, exact re-ranking with "
                                   "the index's head.")
    s.add_argument("index", type=Path, help="index folder written by `hade index`")
    s.add_argument("query", nargs="?", default=None, help="text query")
    s.add_argument("--audio", type=Path, default=None, help="search by example: an audio file")
    s.add_argument("-k", type=int, default=10, help="results to show")
    s.add_argument("--candidates", type=int, default=100, help="windows recalled by the ANN and re-ranked")
    s.add_argument("--per-file", action="store_true", help="one result per file (its best window)")
    s.add_argument("--exhaustive", action="store_true", help="score every window exactly (slow on large indexes)")
    s.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (more = better recall)")
    s.add_argument("--root", type=Path, default=None, help="folder the indexed files live in now")
    s.add_argument("--device", default="cpu")
    s.add_argument("--compute", choices=PRECISIONS, default="fp32",
                   help="query encoder precision (autocast; bf16 on CPUs with AMX/AVX512-BF16 or CUDA)")
    s.add_argument("--json", action="store_true", help="print JSON")


def _report_errors(stats: dict) -> None:
    for e in stats.get("errors", []) + stats.get("skipped", []):
        print(f"hade index: skipped {e['path']}: {e['reason']}", file=sys.stderr)


def cmd_index_check(args: argparse.Namespace) -> int:
    """`hade index --check INDEX`: 0 intact, 1 damaged."""
    if len(args.paths) != 1:
        raise InputError(f"hade index --check takes one index folder, got {len(args.paths)}: {args.paths}")
    from hade.index.integrity import check_index

    index = Path(args.paths[0])
    result = check_index(index, deep=True)
    if args.json:
        print(json.dumps({"ok": result.ok, "problems": [p.to_dict() for p in result.problems],
                          "notes": result.notes, "repair": result.repair}, indent=2))
        return 0 if result.ok else 1
    for note in result.notes:
        print(f"note: {note}")
    for p in result.problems:
        print(f"damaged: {index / p.file}: {p.problem}")
    if result.ok:
        print(f"{index}: intact")
        return 0
    print(f"repair with: {result.repair}")
    return 1


def cmd_index(args: argparse.Namespace) -> int:
    """Build or update an index (or merge parts when the first positional is `merge`)."""
    if args.check:
        return cmd_index_check(args)
    if args.paths[0] == "merge":
        return cmd_index_merge(args)
    if len(args.paths) != 1:
        raise InputError(f"hade index takes one folder, got {len(args.paths)}: {args.paths}")
    if args.out is None:
        raise InputError("hade index: --out INDEX is required")
    from hade.index.build import build_index

    stats = build_index(args.paths[0], args.out, args.ckpt, window=args.window, hop=args.hop,
                        batch_size=args.batch_size, ann_threshold=args.ann_threshold,
                        shard=args.shard, rebuild=args.rebuild, precision=args.precision, device=args.device,
                        progress=not args.quiet, aux_captions=args.aux_captions,
                        compute=args.compute, follow_external_links=args.follow_external_links)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        _report_errors(stats)
        for what in stats["repaired"]:
            print(f"repaired: {what}")
        for note in stats["notes"]:
            print(f"note: {note}")
        print(f"{args.out}: {stats['files']} files, {stats['windows']} windows ({stats['ann']['kind']} ANN); "
              f"this run: {stats['encoded_files']} encoded, {stats['unchanged_files']} unchanged, "
              f"{stats['touched_files'] + stats['reused_files']} reused, {stats['removed_files']} removed, "
              f"{len(stats['errors'])} unreadable, {stats['seconds']:.1f} s")
    return 0


def cmd_index_merge(args: argparse.Namespace) -> int:
    """`hade index merge OUT PART1 PART2 ...`."""
    paths = args.paths[1:] if args.paths and args.paths[0] == "merge" else args.paths
    if len(paths) < 2:
        raise InputError("usage: hade index merge OUT PART1 [PART2 ...]")
    from hade.index.finalize import merge_indexes

    summary = merge_indexes(paths[0], paths[1:], ann_threshold=args.ann_threshold, root=args.root,
                            progress=not args.quiet)
    print(json.dumps(summary, indent=2) if args.json else
          f"{summary['out']}: {summary['files']} files, {summary['windows']} windows from {summary['parts']} parts "
          f"({summary['ann']['kind']} ANN)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Print the best windows for a text query or an --audio example."""
    if (args.query is None) == (args.audio is None):
        raise InputError('hade search: give a text query or --audio FILE (not both), '
                         'e.g. hade search INDEX "a dog barks"')
    if args.k <= 0 or args.candidates <= 0:
        raise InputError("hade search: -k and --candidates must be positive")
    from hade.index.search import Index

    index = Index.open(args.index, device=args.device, root=args.root, precision=args.compute)
    try:
        query = args.query if args.audio is None else args.audio
        hits = index.search(query, k=args.k, candidates=args.candidates, per_file=args.per_file,
                            exhaustive=args.exhaustive, nprobe=args.nprobe)
        if args.json:
            print(json.dumps([{"rank": r, **h.to_dict(), "file": str(index.root / h.path)}
                              for r, h in enumerate(hits, 1)], indent=2))
        else:
            width = max([len(h.path) for h in hits] + [4])
            print(f"{'rank':>4}  {'file':<{width}}  {'window':>17}  score")
            for r, h in enumerate(hits, 1):
                print(f"{r:>4}  {h.path:<{width}}  {h.start:7.2f}–{h.end:7.2f}s  {h.score:.4f}")
            if not hits:
                print("(no results: the index is empty)")
    finally:
        index.close()
    return 0


INDEX_COMMANDS = {"index": cmd_index, "search": cmd_search}


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m hade.index.cli index ...`), with `hade`'s error handling."""
    parser = argparse.ArgumentParser(prog="hade")
    sub = parser.add_subparsers(dest="command", required=True)
    add_index_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return INDEX_COMMANDS[args.command](args)
    except HadeError as e:
        print(f"hade {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
