"""`hade demo`: synthesise data, train a small model on CPU, evaluate, show results (hade.demo)."""
from __future__ import annotations

import argparse
from pathlib import Path

from hade.apps.choices import head_help


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade demo` to a sub-parser set."""
    p = sub.add_parser("demo", help="synthesise data, train a small model on CPU, evaluate, show results")
    p.add_argument("--out", type=Path, default=Path("demo-run"))
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None, help="training budget")
    p.add_argument("--head", default=None, help=head_help("default: tha+dcr"))
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from hade.demo import run_demo

    return run_demo(args.out, clips=args.clips, minutes=args.minutes, head=args.head, progress=not args.quiet)
