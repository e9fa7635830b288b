"""`hade index`: build, update, check or merge a search index (hade.index).

    hade index DIR --ckpt CKPT --out INDEX [--window S] [--hop S] [--shard i/N] [--rebuild] [--aux-captions F]
               [--storage-dtype float16|float32] [--token-codec FACTORY|none] [--ann-memory-budget BYTES]
               [--follow-external-links]
    hade index --check INDEX
    hade index merge OUT PART1 PART2 ...

`hade index merge` is the `index` command whose first positional is the word `merge` (to index a folder
literally named merge, write ./merge).

`hade index --check INDEX` verifies an index folder without changing it: the database (`PRAGMA
integrity_check`), every chunk array, the ANN and the model copy against the sizes and sha256 recorded
when they were written. It prints each damaged file with what is wrong, then the command that repairs it
(the same `hade index DIR --out INDEX` that built it: a re-run repairs damage), and exits 0 when the index
is intact, 1 when it is damaged. A re-run prints what it repaired.

Parallel indexing: the same `hade index DIR --out INDEX ...` started by torchrun or srun (see
hade.index.launch) builds shard RANK/W into INDEX.shards/RANK-of-W, waits for every rank, and rank 0
merges the shards into INDEX as `hade index merge` does (replacing the INDEX of an earlier run); the other
ranks exit 0. The shards are kept: a re-run updates them incrementally. `--device cuda` is cuda:LOCAL_RANK,
modulo the GPUs the rank sees (under `srun --gpus-per-task 1` a task sees only its own GPU, cuda:0).
INDEX must be on a file system every rank sees (with plain srun the ranks also meet through a file there).

    torchrun --nproc_per_node 4 -m hade.cli index DIR --ckpt CKPT --out INDEX --device cuda
    srun -n 4 --gpus-per-task 1 --kill-on-bad-exit=1 hade index DIR --ckpt CKPT --out INDEX --device cuda
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hade.apps.argtypes import positive_int, seconds
from hade.config import COMPUTE_DTYPES, STORAGE_DTYPES
from hade.errors import HadeError, InputError
from hade.utils.units import parse_bytes
from hade.utils.launch import Launch, detect_launch

if TYPE_CHECKING:
    from hade.index.report import BuildReport


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
    p.add_argument("--window", type=seconds, default=None, help="window seconds (default: model clip length, <= 10 s)")
    p.add_argument("--hop", type=seconds, default=None, help="hop seconds between windows (default: window/2)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="windows per encoder batch (and per commit)")
    p.add_argument("--ann-threshold", type=positive_int, default=None,
                   help="windows from which an IVF index replaces the exact flat one (default: the index's, "
                        "else 50000)")
    p.add_argument("--shard", default=None, help="i/N: index only slice i of N of the files (then `index merge`); "
                                                 "under torchrun or srun each rank takes its own shard and rank 0 "
                                                 "merges")
    p.add_argument("--rebuild", action="store_true", help="discard the existing index (e.g. for a new model)")
    p.add_argument("--force", action="store_true",
                   help="write the index into --out even when it is a non-empty folder that is not an index "
                        "(what is there is left alone)")
    p.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default=None,
                   help="dtype the representations are stored in (default float16); fixed when the index is "
                        "created")
    p.add_argument("--precision", choices=STORAGE_DTYPES, default=None, dest="deprecated_precision",
                   help=argparse.SUPPRESS)  # the name before --storage-dtype; still accepted
    p.add_argument("--token-codec", default=None, metavar="FACTORY",
                   help="how token features (THA's audio tokens) are stored: a faiss codec factory or 'none' "
                        "(float). The default for a new index, OPQ32,IVF256,PQ32, keeps 8 dims a sub-quantiser at "
                        "every token width: 35 bytes a token at 256 dims (512 in float16), 67 bytes a token at 512 "
                        "dims (1024), 99 bytes a token at 768 dims (1536). It is fitted once the index has enough "
                        "tokens to train it (9984 a token level; float16 until then). Fixed at creation, except "
                        "that an index with float tokens is compressed when given one")
    p.add_argument("--ann-memory-budget", type=parse_bytes, default=None, metavar="BYTES",
                   help="memory the ANN may take, e.g. 2G: above --ann-threshold windows the IVF's 8-bit codes "
                        "give way to product-quantised ones (IVF-PQ) sized to fit (default: the index's, else none)")
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


def _report_errors(report: BuildReport) -> None:
    for e in report.errors + report.skipped:
        print(f"hade index: skipped {e.path}: {e.reason}", file=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
    """`hade index --check INDEX`: 0 intact, 1 damaged."""
    if len(args.paths) != 1:
        raise InputError(f"--check takes one index folder, got {len(args.paths)}: {args.paths}")
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


def _print_report(out: Path, report: BuildReport) -> None:
    _report_errors(report)
    for what in report.repaired:
        print(f"repaired: {what}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"{out}: {report.files} files, {report.windows} windows ({report.ann.kind} ANN); "
          f"this run: {report.encoded_files} encoded, {report.unchanged_files} unchanged, "
          f"{report.touched_files + report.reused_files} reused, {report.removed_files} removed, "
          f"{len(report.errors)} unreadable, {report.seconds:.1f} s")


def run(args: argparse.Namespace) -> int:
    """Build or update an index (or check it with --check, or merge parts when the first positional is `merge`)."""
    launch = detect_launch()
    if launch.parallel and (args.check or args.paths[0] == "merge"):
        raise InputError(f"{'--check' if args.check else 'merge'} runs in one process; start it "
                         f"without {launch.launcher}")
    if args.check:
        return run_check(args)
    if args.paths[0] == "merge":
        return run_merge(args)
    if len(args.paths) != 1:
        raise InputError(f"one folder to index, got {len(args.paths)}: {args.paths}")
    if args.out is None:
        raise InputError("--out INDEX is required")
    if launch.parallel:
        return run_parallel(args, launch)
    _say_claim(args)
    report = _build(args, args.out, args.shard, args.device, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(args.out, report)
    return 0


def _say_claim(args: argparse.Namespace) -> None:
    """Refuse an --out that is not an index (unless --force, hade.utils.outdir); say what happens to one."""
    from hade.index.build import INDEX_OUTPUT
    from hade.utils.outdir import Claim, claim_output_dir

    claim = claim_output_dir(args.out, INDEX_OUTPUT, force=args.force)
    if claim is Claim.OWN:
        what = "rebuilding it from scratch (--rebuild)" if args.rebuild else "updating it (new and changed files)"
        print(f"hade index: note: {args.out} holds an index; {what}", file=sys.stderr)
    elif claim is Claim.FORCED:
        print(f"hade index: note: --force: writing the index into {args.out} beside what is there", file=sys.stderr)


def _settings(args: argparse.Namespace, shard: str | None, device: str, progress: bool):
    """The command's `IndexSettings`, for `shard` on `device`."""
    from hade.index.settings import IndexSettings

    return IndexSettings(window=args.window, hop=args.hop, batch_size=args.batch_size,
                         ann_threshold=args.ann_threshold, shard=shard, rebuild=args.rebuild,
                         storage_dtype=_storage_dtype(args), device=device, progress=progress,
                         aux_captions=args.aux_captions, compute=args.compute,
                         follow_external_links=args.follow_external_links, token_codec=args.token_codec,
                         ann_memory_budget=args.ann_memory_budget, force=getattr(args, "force", False))


def _build(args: argparse.Namespace, out: Path, shard: str | None, device: str, progress: bool) -> BuildReport:
    """build_index with the command's settings, into `out`, for `shard` on `device`."""
    from hade.index.build import build_index

    return build_index(args.paths[0], out, args.ckpt, _settings(args, shard, device, progress))


def _check_parallel(args: argparse.Namespace, launch: Launch) -> None:
    """Refuse, on every rank before anything is encoded, what would make the parallel run fail at the end."""
    if args.shard is not None:
        raise InputError(f"--shard {args.shard}: this is rank {launch.rank} of {launch.world_size} started by "
                         f"{launch.launcher}, which takes shard {launch.shard} itself; drop --shard (or run one "
                         "process per shard without a launcher)")
    from hade.index.build import INDEX_OUTPUT
    from hade.utils.outdir import claim_output_dir

    claim_output_dir(args.out, INDEX_OUTPUT, force=args.force)


def run_parallel(args: argparse.Namespace, launch: Launch) -> int:
    """One rank of a torchrun/Slurm `hade index`: build this rank's shard, wait for all, merge on rank 0."""
    from hade.index.launch import Meeting, RankOutcome, shard_dirs, shards_dir
    from hade.utils.launch import rank_device

    _check_parallel(args, launch)
    parts = shard_dirs(args.out, launch.world_size)
    error: Exception | None = None
    report = None
    with Meeting(launch, shards_dir(args.out)) as meeting:
        try:
            report = _build(args, parts[launch.rank], launch.shard, rank_device(args.device, launch),
                            progress=not args.quiet and launch.rank == 0)
        except Exception as e:  # noqa: BLE001 - every rank must reach the exchange, or the others wait forever
            error = e
        failure = None if error is None else f"{type(error).__name__}: {error}"
        outcomes = meeting.gather_outcomes(RankOutcome(report, failure))
    if error is not None:
        raise error
    if launch.rank != 0:
        return 0
    failed = [f"rank {r}: {o.error}" for r, o in enumerate(outcomes) if o.error]
    if failed:
        raise HadeError(f"{args.out}: not merged, {len(failed)} of {launch.world_size} ranks failed ("
                        f"{'; '.join(failed)}); fix that and run the same command again (finished shards are kept)")
    from hade.index.merge import merge_indexes

    merged = merge_indexes(args.out, parts, ann_threshold=args.ann_threshold, progress=not args.quiet, replace=True)
    if args.json:
        print(json.dumps({**merged.to_dict(), "shards": [o.report.to_dict() for o in outcomes]}, indent=2))
        return 0
    for part, outcome in zip(parts, outcomes):
        _print_report(part, outcome.report)
    print(f"{merged.out}: {merged.files} files, {merged.windows} windows merged from "
          f"{merged.parts} shards ({merged.ann.kind} ANN)")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """`hade index merge OUT PART1 PART2 ...`."""
    paths = args.paths[1:] if args.paths and args.paths[0] == "merge" else args.paths
    if len(paths) < 2:
        raise InputError("usage: hade index merge OUT PART1 [PART2 ...]")
    from hade.index.merge import merge_indexes

    merged = merge_indexes(paths[0], paths[1:], ann_threshold=args.ann_threshold, root=args.root,
                           progress=not args.quiet)
    print(json.dumps(merged.to_dict(), indent=2) if args.json else
          f"{merged.out}: {merged.files} files, {merged.windows} windows from {merged.parts} parts "
          f"({merged.ann.kind} ANN)")
    return 0
