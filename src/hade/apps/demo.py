"""`hade demo`: synthesise data, train a small model on CPU, evaluate, show results (hade.demo)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hade.apps.argtypes import positive_float, positive_int
from hade.apps.choices import head_help


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade demo` to a sub-parser set."""
    p = sub.add_parser("demo", help="synthesise data, train a small model on CPU, evaluate, show results")
    p.add_argument("--out", type=Path, default=Path("demo-run"))
    p.add_argument("--clips", type=positive_int, default=None)
    p.add_argument("--minutes", type=positive_float, default=None, help="training budget")
    p.add_argument("--head", default=None, help=head_help("default: tha+dcr"))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it is a non-empty folder that is not a demo's")
    return p


def run(args: argparse.Namespace) -> int:
    from hade.demo import run_demo
    from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any

    kind = OutputKind("hade demo folder", has_any("synthcaps", "run", "eval_metrics.json"))
    if claim_output_dir(args.out, kind, force=args.force) is Claim.OWN:
        print(f"hade demo: note: {args.out} holds a demo; resuming it", file=sys.stderr)
    return run_demo(args.out, clips=args.clips, minutes=args.minutes, head=args.head, progress=not args.quiet)
