"""`hade convert`: the command line of foreign-checkpoint conversion (hade.models.convert's key maps,
hade.checkpoint.convert_checkpoint's writing)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hade.errors import InputError
from hade.models.convert import KINDS, format_report


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    """``hade convert SRC --out DIR [--audio-encoder htsat-tiny] [--text-encoder minilm] [--head dp]
    [--kind K] [--allow-partial]``."""
    p = subparsers.add_parser("convert", help="convert an HTS-AT / LAION-CLAP / WavCaps checkpoint to a hade checkpoint")
    p.add_argument("src", type=Path, help="foreign checkpoint (.ckpt/.pt/.pth via weights_only, or .safetensors)")
    p.add_argument("--out", type=Path, required=True, help="hade checkpoint directory to write")
    p.add_argument("--audio-encoder", default="htsat-tiny", help="HTSAT preset matching the checkpoint")
    p.add_argument("--audio-overrides", default=None, help="JSON object of HTSATConfig fields (e.g. front end)")
    p.add_argument("--text-encoder", default="minilm", help="hade text encoder (the foreign text tower is not loaded)")
    p.add_argument("--head", default="dp", help="retrieval head (freshly initialised)")
    p.add_argument("--kind", choices=KINDS, default=None, help="key convention (default: detected from the keys)")
    p.add_argument("--allow-partial", action="store_true", help="load even if encoder tensors are missing")


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``hade convert``; prints the report, returns the exit code."""
    from hade.checkpoint import convert_checkpoint
    from hade.config import ModelConfig

    overrides = {}
    if args.audio_overrides:
        try:
            overrides = json.loads(args.audio_overrides)
        except json.JSONDecodeError as e:
            raise InputError(f"--audio-overrides: invalid JSON: {e.msg}") from None
        if not isinstance(overrides, dict):
            raise InputError("--audio-overrides must be a JSON object")
    config = ModelConfig(audio_encoder=args.audio_encoder, audio_overrides=overrides,
                         text_encoder=args.text_encoder, head=args.head)
    report = convert_checkpoint(args.src, args.out, config, allow_partial=args.allow_partial, kind=args.kind)
    print(format_report(report))
    print(f"wrote {args.out}")
    return 0


__all__ = ["add_convert_parser", "cmd_convert"]
