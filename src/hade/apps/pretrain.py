"""`hade pretrain`: pretrain an audio encoder by tagging the sound events of a SynthCaps set
(hade.train.pretrain), then start retrieval runs from it with `hade train --init-from RUN`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hade.apps.argtypes import nonnegative_int, positive_float, positive_int, seconds
from hade.apps.choices import audio_encoder_help

# command-line dest -> PretrainConfig field, for the flags that override a field when given
FIELDS = ("audio_encoder", "epochs", "batch_size", "lr", "clip_seconds", "seed")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade pretrain` to a sub-parser set."""
    p = sub.add_parser("pretrain", help="pretrain an audio encoder by tagging a SynthCaps set's events "
                                        "(then: hade train --init-from RUN)")
    p.add_argument("--data", type=Path, required=True,
                   help="a SynthCaps set (hade synth), disjoint from the retrieval sets (another --seed)")
    p.add_argument("--out", type=Path, required=True, help="run directory (resumed when present)")
    p.add_argument("--config", type=Path, default=None, help="JSON file with PretrainConfig fields")
    p.add_argument("--audio-encoder", default=None, help=audio_encoder_help("the retrieval runs must use the same"))
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--clip-seconds", type=seconds, default=None, help="training crop length (default 4)")
    p.add_argument("--seed", type=nonnegative_int, default=None)
    p.add_argument("--force", action="store_true", help="write into a non-empty --out that holds something else")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Pretrain (or resume) and print the best epoch's validation mAP."""
    import torch

    from hade.config import PretrainConfig, load_json_config
    from hade.train.pretrain import ENCODER_FILE, pretrain
    from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any

    cfg = load_json_config(args.config, PretrainConfig) if args.config else PretrainConfig()
    for name in FIELDS:
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    kind = OutputKind("hade pretrain run", has_any("pretrain.json", "state.pt", "audio_encoder.safetensors"))
    if claim_output_dir(args.out, kind, force=args.force) is Claim.OWN:
        print(f"hade pretrain: note: {args.out} holds a pretraining run; resuming it", file=sys.stderr)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    summary = pretrain(args.data, args.out, cfg, progress=not args.quiet)
    best = summary.best
    print(json.dumps({"best_epoch": best.epoch, "val_mAP": round(100 * best.val_mAP, 2),
                      "chance_val_mAP": round(100 * summary.chance_val_mAP, 2),
                      "encoder": str(args.out / ENCODER_FILE)}, indent=2))
    print(f"next: hade train --init-from {args.out} --audio-encoder {cfg.audio_encoder} --head HEAD ...")
    return 0
