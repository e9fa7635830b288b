"""`hade payoff`: THA and THA+DCR against DP by training-set size and start (hade.experiments.payoff)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hade.apps.argtypes import positive_int

# hade.experiments.payoff's defaults, repeated so that building the parser imports no torch (tests/experiments)
DEFAULT_CELLS = "scratch:336,scratch:1000,scratch:3000,pretrained:336,scratch:clotho,pretrained:clotho"
HEADS = ("dp", "tha", "tha+dcr")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade payoff` to a sub-parser set."""
    p = sub.add_parser("payoff", help="when does HADE pay off: THA(+DCR) against DP by training-set size, from "
                                      "scratch and from a pretrained audio encoder, with a plot")
    p.add_argument("--root", type=Path, default=Path("runs/payoff"), help="data, runs and report (resumed)")
    p.add_argument("--cells", default=DEFAULT_CELLS,
                   help=f"comma-separated START:SET (START scratch|pretrained, SET clips or clotho); default {DEFAULT_CELLS}")
    p.add_argument("--heads", default=",".join(HEADS),
                   help=f"rows of each cell (default {','.join(HEADS)}; dp is the baseline; a cell larger than the "
                        f"demo set runs only dp and tha+dcr of them)")
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--epochs", type=positive_int, default=4, help="retrieval epochs (the demo's budget: 4)")
    p.add_argument("--pretrain-epochs", type=positive_int, default=6, help="tagging epochs of the pretraining (default 6)")
    p.add_argument("--archive", type=Path, default=None,
                   help="folder that keeps each finished run's eval.json/per_query.npz and the pretrained encoder; "
                        "runs found there are not trained again")
    p.add_argument("--report-only", action="store_true",
                   help="write the report and plot from finished runs only (trains nothing; a run finished "
                        "without its held-out set is evaluated on it first)")
    p.add_argument("--status", action="store_true",
                   help="say where every run stands (finished, training, interrupted with its epochs, pending) "
                        "and stop; reads only")
    p.add_argument("--plot", type=Path, default=None, help="PNG of THA+DCR − DP against size (default ROOT/payoff.png)")
    p.add_argument("--force", action="store_true", help="use a non-empty --root that holds something else")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the study, write ROOT/payoff.md/.json and the plot, print the markdown."""
    from hade.errors import InputError
    from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any
    from hade.experiments.payoff import Study, parse_cells, plot, pretrain_config, report_only, run_study

    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if "dp" not in heads:
        raise InputError("--heads: dp must be one of them (it is the baseline)")
    study = Study(args.root, parse_cells(args.cells), seeds=args.seeds, epochs=args.epochs, heads=heads,
                  pretrain=pretrain_config(args.pretrain_epochs), archive=args.archive, progress=not args.quiet)
    if args.status:
        from hade.experiments.payoff import format_status, status

        print(format_status(status(study), args.epochs))
        return 0
    kind = OutputKind("hade payoff folder", has_any("data", "runs", "pretrain", "payoff.json"))
    if claim_output_dir(args.root, kind, force=args.force) is Claim.OWN:
        print(f"hade payoff: note: {args.root} holds a study; resuming it (finished runs are kept)", file=sys.stderr)
    if args.report_only:
        report = report_only(study)
    else:
        report = run_study(study)
    if report.cells:
        print(f"plot: {plot(report, args.plot or args.root / 'payoff.png')}")
    print((args.root / "payoff.md").read_text())
    return 0
