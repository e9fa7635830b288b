"""`hade train`, and the training application for torchrun:
`torchrun --nproc_per_node N -m hade.train --data DIR --out RUN [--config FILE] ...`

An application (it parses arguments), so it lives here and not in the library package hade.train, whose
`__main__` only forwards to `main`. `main` takes the arguments of `hade train`; the process joins the
torch.distributed group that torchrun describes in its environment (gloo on CPU, nccl on CUDA) and trains
data-parallel (see hade.train.distributed). Run without torchrun it trains in one process, as `hade train`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from hade.apps.argtypes import nonnegative_int, positive_float, positive_int, seconds
from hade.apps.choices import audio_encoder_help, head_help, text_encoder_help
from hade.config import SAME_CLIP_MODES, TRAIN_PRECISIONS
from hade.data.text import CAPTION_NORMALIZATIONS
from hade.errors import HadeError
from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any

# command-line dest -> TrainConfig field, for the flags that override a field when given
TRAIN_FIELDS = {name: name for name in ("epochs", "batch_size", "lr", "max_steps", "seed", "device", "precision",
                                         "grad_accum_steps", "grad_checkpointing", "init_from", "num_workers",
                                         "clip_seconds")}
TRAIN_FIELDS.update(validate_every="validate_every_steps", validate_clips="validate_clips", same_clip="same_clip")
MODEL_FIELDS = ("head", "audio_encoder", "text_encoder", "caption_normalize")  # flags that override ModelConfig fields


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade train` to a sub-parser set."""
    p = sub.add_parser("train", help="train a retrieval model")
    p.add_argument("--data", type=Path, required=True, help="data set root (Clotho/AudioCaps/WavCaps/JSONL layout)")
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="run directory (resumed when present)")
    p.add_argument("--head", default=None, help=head_help())
    p.add_argument("--config", type=Path, default=None, help="JSON file with TrainConfig fields (and 'model')")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--max-steps", type=positive_int, default=None)
    p.add_argument("--clip-seconds", type=seconds, default=None,
                   help="seconds of audio a training pair takes from its clip, a random crop (TrainConfig.clip_seconds, "
                        "default 4); longer than the audio encoder's input (10 s for HTSAT, PaSST, BEATs), a clip is "
                        "encoded in segments whose clip vectors are averaged (the DCASE 2025 baseline trains on 30)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--audio-encoder", default=None, help=audio_encoder_help("htsat-tiny is the paper's"))
    p.add_argument("--text-encoder", default=None, help=text_encoder_help())
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                   help="mixed precision of training: bf16 on CPU or CUDA, fp16 on CUDA")
    p.add_argument("--grad-accum-steps", type=positive_int, default=None,
                   help="split each batch into this many micro-batches (negatives come from the micro-batch)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None,
                   help="activation checkpointing in both encoders")
    p.add_argument("--init-from", default=None,
                   help="start from these weights: a hade checkpoint directory (a `hade train` run, `hade convert` "
                        "output, a `hade pretrain` run), a Hugging Face ClapModel folder, a DCASE 2025 baseline "
                        "checkpoint (every part that fits), or an HTS-AT / PaSST / BEATs / LAION-CLAP / WavCaps "
                        "file (audio encoder only); init.json in the run says what came from where")
    p.add_argument("--workers", type=nonnegative_int, default=None, dest="num_workers",
                   help="data loader processes that decode audio while the model trains (default: min(4, CPUs per "
                        "training process - 1); 0: decode in the training process)")
    p.add_argument("--validate-every", type=positive_int, default=None, metavar="N",
                   help="validate (and select the best checkpoint) every N steps instead of after each epoch "
                        "(TrainConfig.validate_every_steps)")
    p.add_argument("--validate-clips", type=positive_int, default=None, metavar="N",
                   help="validate on N clips of the validation split, evenly spaced by sorted id (TrainConfig."
                        "validate_clips; default: all)")
    p.add_argument("--same-clip", choices=SAME_CLIP_MODES, default=None,
                   help="two captions of one clip in a batch: both positives (default, as the DCASE 2025 baseline) "
                        "or 'exclude' (left out of the loss's denominators)")
    p.add_argument("--caption-normalize", choices=CAPTION_NORMALIZATIONS, default=None,
                   help="'dcase': lower-case captions and drop punctuation before tokenising (the DCASE 2025 "
                        "baseline's), at training, evaluation and search alike (saved with the checkpoint); "
                        "default 'none'")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run directory has a checkpoint")
    p.add_argument("--force", action="store_true",
                   help="write the run into --out even when it is a non-empty folder that is not a training run "
                        "(what is there is kept beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def train_config_from_args(args: argparse.Namespace):
    """The TrainConfig of `--config` (or the defaults) with the flags that were given applied."""
    from hade.config import TrainConfig, load_json_config

    cfg = load_json_config(args.config, TrainConfig) if args.config else TrainConfig()
    for dest, name in TRAIN_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            setattr(cfg, name, value)
    for name in MODEL_FIELDS:
        if getattr(args, name) is not None:
            setattr(cfg.model, name, getattr(args, name))
    return cfg


# A run directory: what hade.train.trainer writes into --out (hade.utils.outdir).
RUN_OUTPUT = OutputKind("hade training run", has_any("train_config.json", "checkpoints", "metrics.json"))


def claim_run_dir(args: argparse.Namespace) -> None:
    """Refuse an --out that is neither new, empty nor a training run (unless --force); say what happens to a
    run already there. (`hade train` only: under torchrun every rank would race to check the folder.)"""
    claim = claim_output_dir(args.out, RUN_OUTPUT, force=getattr(args, "force", False))
    if claim is Claim.OWN:
        what = ("starting over (--no-resume): its checkpoints and metrics are replaced" if args.no_resume
                else "resuming it where it stopped (--no-resume starts over)")
        print(f"hade train: note: {args.out} holds a training run; {what}", file=sys.stderr)
    elif claim is Claim.FORCED:
        print(f"hade train: note: --force: writing the run into {args.out} beside what is there", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """`hade train`: train (or resume) in this process and print the summary as JSON."""
    from hade.train.trainer import train

    config = train_config_from_args(args)
    claim_run_dir(args)
    summary = train(args.data, args.out, config, resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def train_parser() -> argparse.ArgumentParser:
    """A `hade` parser with the train command only (usage and errors read `hade train ...`): what `main`
    parses, without importing every other command as `hade.cli.build_parser` would. The dependency runs one
    way: this application uses the CLI's parser class, the CLI names this module in its table."""
    from hade.cli import HadeArgumentParser

    parser = HadeArgumentParser(prog="hade")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hade.train ...` (under torchrun or not): the arguments of `hade train`."""
    import torch.distributed as dist

    from hade.train import distributed as ddp
    from hade.train.trainer import train

    args = train_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    ctx = ddp.init_from_env()
    try:
        summary = train(args.data, args.out, train_config_from_args(args), resume=not args.no_resume,
                        progress=not args.quiet)
        if ctx.is_main:
            print(json.dumps(summary.to_dict(), indent=2))
        return 0
    except HadeError as e:
        print(f"hade.train (rank {ctx.rank}): error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hade.train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()
