"""`hade explain`: the command line of hade.explain (parse, load the checkpoint, write figures and JSON)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hade.apps.argtypes import seconds
from hade.errors import InputError
from hade.explain import explain, format_summary, save_figures
from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade explain` to a sub-parser set (dispatch with `run`)."""
    p = subparsers.add_parser("explain", help="explain one audio-text score (attention maps, factor weights)")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--audio", type=Path, required=True, help="audio file (resampled to the model's rate)")
    p.add_argument("--text", required=True, help="caption to explain")
    p.add_argument("--out", type=Path, default=Path("explain-out"), help="directory for the PNG figures")
    p.add_argument("--json", action="store_true", help="also write explanation.json with all arrays")
    p.add_argument("--clip-seconds", type=seconds, default=None,
                   help="default: the clip length the model was trained on (else the longest it holds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it is a non-empty folder that is not an explanation's")
    return p


# What `hade explain` writes into --out (hade.utils.outdir): its figures and explanation.json.
EXPLAIN_OUTPUT = OutputKind("hade explain folder", has_any("explanation.json", "tha_level*.png", "factors.png"))


def run(args: argparse.Namespace) -> int:
    """Run `hade explain`: print a summary and the files written. Errors are InputError (HadeError)."""
    from hade.checkpoint import load
    from hade.utils.atomic import write_json_atomic

    if not str(args.text).strip():
        raise InputError("--text: the caption is empty")
    audio = Path(args.audio)
    if not audio.is_file():
        raise InputError(f"--audio {audio}: file not found")
    if claim_output_dir(args.out, EXPLAIN_OUTPUT, force=getattr(args, "force", False)) is Claim.OWN:
        print(f"hade explain: note: replacing the explanation in {args.out}", file=sys.stderr)
    model = load(args.ckpt, device=getattr(args, "device", "cpu"))
    expl = explain(model, audio, args.text, getattr(args, "clip_seconds", None))
    files = save_figures(expl, args.out)
    if args.json:
        target = Path(args.out) / "explanation.json"
        write_json_atomic(target, expl.to_dict())
        files.append(target)
    print(format_summary(expl))
    if not files:
        print("(this head has no THA levels or factors to draw)")
    for f in files:
        print(f"wrote {f}")
    return 0


__all__ = ["add_parser", "run"]
