"""`hade pack DATA --out PACKED [--sample-rate SR]`: the command line of hade.data.packed.writer.pack.

Every split of DATA (Clotho, AudioCaps, WavCaps or a manifest) is decoded and resampled once and written
as memory-mapped int16 shards with its captions; `hade train --data PACKED` and `hade eval --data PACKED`
then read it like the folder it came from. Run the same command again to resume an interrupted pack.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hade.apps.argtypes import positive_int
from hade.data.packed.writer import DEFAULT_CLIPS_PER_SHARD, DEFAULT_SAMPLE_RATE, PackResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``hade pack DATA --out PACKED [--sample-rate SR] [--layout L] [--clips-per-shard N] [--quiet]``."""
    p = sub.add_parser("pack", help="decode and resample a data set once into memory-mapped shards (faster training input)")
    p.add_argument("data", type=Path, help="data set folder (or one captions/manifest file)")
    p.add_argument("--out", type=Path, required=True, help="packed set folder to write (or to resume)")
    p.add_argument("--sample-rate", type=positive_int, default=DEFAULT_SAMPLE_RATE,
                   help="rate to store, Hz: the model's (htsat-tiny: 32000, the default; htsat-cpu: 16000)")
    p.add_argument("--layout", default="auto", help="data layout (default: detected)")
    p.add_argument("--clips-per-shard", type=positive_int, default=DEFAULT_CLIPS_PER_SHARD, help="clips per shard file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="pack into --out even when it is a non-empty folder that is not a packed set (what is "
                        "there is left alone)")


def format_result(result: PackResult) -> str:
    """One line per split, and where the skipped files are listed."""
    lines = [f"packed {result.out} at {result.sample_rate} Hz"]
    for s in result.splits:
        lines.append(f"  {s.name} (from {s.source_split}): {s.clips} clips in {s.shards} shard(s), "
                     f"{len(s.problems)} skipped" + (f", {len(s.repacked)} damaged shard(s) packed again"
                                                     if s.repacked else ""))
    if any(s.problems for s in result.splits):
        lines.append(f"  skipped files and why: {result.out / 'pack-report.json'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``hade pack``; prints the summary, returns the exit code (0 also when files were skipped)."""
    from hade.data.packed.writer import PACKED_OUTPUT, pack
    from hade.utils.outdir import Claim, claim_output_dir

    claim = claim_output_dir(args.out, PACKED_OUTPUT, force=args.force)
    if claim is Claim.OWN:
        print(f"hade pack: note: {args.out} holds a packed set; resuming it (packed clips are kept)", file=sys.stderr)
    result = pack(args.data, args.out, sample_rate=args.sample_rate, layout=args.layout,
                  clips_per_shard=args.clips_per_shard, progress=not args.quiet, force=args.force)
    print(format_result(result))
    return 0


__all__ = ["add_parser", "format_result", "run"]
