"""`hade ablate --table N`: run the rows of one of HADE's tables over several seeds (hade.experiments.ablate)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hade.apps.argtypes import positive_int
from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade ablate` to a sub-parser set."""
    p = sub.add_parser("ablate", help="run the rows of one of HADE's tables over several seeds")
    p.add_argument("--table", required=True, choices=["1", "2", "3", "4", "5", "compare", "ood"])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="default: runs/ablate-table{N}")
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--ood-data", type=Path, default=None,
                   help="--table ood: a SynthCaps set of held-out event types (hade synth --event-types ...)")
    p.add_argument("--config", type=Path, default=None, help="base TrainConfig JSON (default: the demo's)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--rows", default=None,
                   help="comma-separated subset of the table's rows to run (others are reported when finished)")
    p.add_argument("--status", action="store_true",
                   help="say where every run of the table stands (finished, training, interrupted with its epochs, "
                        "pending) and stop; reads only")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it is a non-empty folder that is not an ablation's")
    return p


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the table and print its markdown."""
    from hade.config import TrainConfig, load_json_config
    from hade.demo import demo_config
    from hade.experiments.ablate import ablate

    base = load_json_config(args.config, TrainConfig) if args.config else demo_config("dp", epochs=6)
    if args.epochs is not None:
        base.epochs = args.epochs
    out = args.out or Path(f"runs/ablate-table{args.table}")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    if args.status:
        from hade.experiments.ablate import table_status
        from hade.experiments.runs import format_run_states

        print(format_run_states(table_status(args.table, out, args.seeds, rows), base.epochs))
        return 0
    kind = OutputKind("hade ablate folder", has_any("rows", "table*.json", "table*.md"))
    if claim_output_dir(out, kind, force=args.force) is Claim.OWN:
        print(f"hade ablate: note: {out} holds an ablation; resuming it (finished runs are kept)", file=sys.stderr)
    ablate(args.table, args.data, out, seeds=args.seeds, base=base, progress=not args.quiet, ood_data=args.ood_data,
           rows=rows)
    print((out / f"table{args.table}.md").read_text())
    return 0
