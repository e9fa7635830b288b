"""`hade synth OUT`: generate a SynthCaps captioned-audio data set (hade.data.synthcaps)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade synth` to a sub-parser set."""
    p = sub.add_parser("synth", help="generate a SynthCaps captioned-audio data set")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--clips", type=int, default=400, help="number of clips over all splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--duration", type=float, default=4.0, help="clip length in seconds")
    p.add_argument("--layout", choices=["clotho", "audiocaps", "wavcaps"], default="clotho")
    p.add_argument("--event-types", default=None, help="comma-separated subset of event types")
    return p


def run(args: argparse.Namespace) -> int:
    """Generate (or finish generating) the set and print its summary as JSON."""
    from hade.data.synthcaps import generate

    events = [e.strip() for e in args.event_types.split(",")] if args.event_types else None
    summary = generate(args.out, clips=args.clips, seed=args.seed, sample_rate=args.sample_rate,
                       duration=args.duration, layout=args.layout, event_types=events)
    print(json.dumps(summary, indent=2, default=str))
    return 0
