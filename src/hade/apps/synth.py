"""`hade synth OUT`: generate a SynthCaps captioned-audio data set (hade.data.synthcaps)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hade.apps.argtypes import positive_int, seconds


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade synth` to a sub-parser set."""
    p = sub.add_parser("synth", help="generate a SynthCaps captioned-audio data set")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--clips", type=positive_int, default=400, help="number of clips over all splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=positive_int, default=16000)
    p.add_argument("--duration", type=seconds, default=4.0, help="clip length in seconds")
    p.add_argument("--layout", choices=["clotho", "audiocaps", "wavcaps"], default="clotho")
    p.add_argument("--event-types", default=None, help="comma-separated subset of event types")
    p.add_argument("--force", action="store_true",
                   help="write the set into OUT even when it is a non-empty folder that is not a SynthCaps set")
    return p


def run(args: argparse.Namespace) -> int:
    """Generate (or finish generating) the set and print its summary as JSON."""
    from hade.data.synthcaps import generate
    from hade.data.synthcaps.writer import OPTIONS_FILE
    from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any

    claim = claim_output_dir(args.out, OutputKind("SynthCaps set", has_any(OPTIONS_FILE)), force=args.force, flag="OUT")
    if claim is Claim.OWN:
        print(f"hade synth: note: {args.out} holds a SynthCaps set; finishing it (complete clips are kept)",
              file=sys.stderr)
    events = [e.strip() for e in args.event_types.split(",")] if args.event_types else None
    summary = generate(args.out, clips=args.clips, seed=args.seed, sample_rate=args.sample_rate,
                       duration=args.duration, layout=args.layout, event_types=events)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0
