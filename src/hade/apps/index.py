"""`hade index`: build, update, check or merge a search index (hade.index).

    hade index DIR --ckpt CKPT --out INDEX [--window S] [--hop S] [--shard i/N] [--rebuild] [--aux-captions F]
               [--storage-dtype float16|float32] [--follow-external-links]
    hade index --check INDEX
    hade index merge OUT PART1 PART2 ...

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

from hade.config import COMPUTE_DTYPES, STORAGE_DTYPES
from hade.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade index` to a sub-parser set."""
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
    p.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default=None,
                   help="dtype the representations are stored in (default float16); fixed when the index is "
                        "created")
    p.add_argument("--precision", choices=STORAGE_DTYPES, default=None, dest="deprecated_precision",
                   help=argparse.SUPPRESS)  # the name before --storage-dtype; still accepted
    p.add_argument("--aux-captions", type=Path, default=None, metavar="FILE",
                   help="HCI+AC models: JSON/CSV of machine-generated captions keyed by path relative to DIR "
                        "or by file name; each file's windows are encoded with its caption")
    p.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32",
                   help="encoder precision (autocast): bf16 on CPUs with AMX/AVX512-BF16 or CUDA, fp16 on CUDA")
    p.add_argument("--root", type=Path, default=None, help="merge: folder the merged files live in now")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _report_errors(stats: dict) -> None:
    for e in stats.get("errors", []) + stats.get("skipped", []):
        print(f"hade index: skipped {e['path']}: {e['reason']}", file=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
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


def _storage_dtype(args: argparse.Namespace) -> str | None:
    """--storage-dtype, or the value of its hidden old name --precision (with a note on stderr)."""
    old = getattr(args, "deprecated_precision", None)
    if old is None:
        return args.storage_dtype
    print("hade index: --precision is now --storage-dtype; --precision goes away in the next release",
          file=sys.stderr)
    if args.storage_dtype is not None and args.storage_dtype != old:
        raise InputError(f"--storage-dtype {args.storage_dtype} and its old name --precision {old} disagree; "
                         "give --storage-dtype only")
    return old


def _print_stats(out: Path, stats: dict) -> None:
    _report_errors(stats)
    for what in stats["repaired"]:
        print(f"repaired: {what}")
    for note in stats["notes"]:
        print(f"note: {note}")
    print(f"{out}: {stats['files']} files, {stats['windows']} windows ({stats['ann']['kind']} ANN); "
          f"this run: {stats['encoded_files']} encoded, {stats['unchanged_files']} unchanged, "
          f"{stats['touched_files'] + stats['reused_files']} reused, {stats['removed_files']} removed, "
          f"{len(stats['errors'])} unreadable, {stats['seconds']:.1f} s")


def run(args: argparse.Namespace) -> int:
    """Build or update an index (or check it with --check, or merge parts when the first positional is `merge`)."""
    if args.check:
        return run_check(args)
    if args.paths[0] == "merge":
        return run_merge(args)
    if len(args.paths) != 1:
        raise InputError(f"hade index takes one folder, got {len(args.paths)}: {args.paths}")
    if args.out is None:
        raise InputError("hade index: --out INDEX is required")
    from hade.index.build import build_index

    stats = build_index(args.paths[0], args.out, args.ckpt, window=args.window, hop=args.hop,
                        batch_size=args.batch_size, ann_threshold=args.ann_threshold, shard=args.shard,
                        rebuild=args.rebuild, storage_dtype=_storage_dtype(args), device=args.device,
                        progress=not args.quiet, aux_captions=args.aux_captions,
                        compute=args.compute, follow_external_links=args.follow_external_links)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        _print_stats(args.out, stats)
    return 0


def run_merge(args: argparse.Namespace) -> int:
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
