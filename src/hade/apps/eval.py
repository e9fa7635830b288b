"""`hade eval`: evaluate a checkpoint under the community protocol (hade.eval.evaluate's pipeline), or score
a DCASE submission (`--dcase-score`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hade.apps.argtypes import positive_int, seconds
from hade.config import COMPUTE_DTYPES
from hade.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade eval` to a sub-parser set."""
    p = sub.add_parser("eval", help="evaluate a checkpoint under the community protocol")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="checkpoint directory (e.g. RUN/checkpoints/best); not needed with --dcase-score")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="evaluation")
    p.add_argument("--clip-seconds", type=seconds, default=None, help="default: the training clip length")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--out", type=Path, default=None,
                   help="write the metrics JSON here, and the per-query results beside it (NAME.per_query.npz)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples (over clips) for the 95%% intervals; 0: no intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (results are reproducible)")
    p.add_argument("--dcase-csv", type=Path, default=None,
                   help="also write a DCASE retrieval submission (caption,fname_1,...,fname_10) here")
    p.add_argument("--dcase-score", type=Path, default=None,
                   help="score this DCASE submission CSV against --data/--split (no checkpoint needed)")
    p.add_argument("--aux-captions", default=None,
                   help="HCI+AC: 'synthcaps' (simulated captioner) or a JSON/CSV file of generated captions")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32",
                   help="encoder precision (autocast): bf16 on CPUs with AMX/AVX512-BF16 or CUDA, fp16 on CUDA; "
                        "scores stay fp32")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true")
    return p


def _dcase_score(args: argparse.Namespace) -> int:
    from hade.data.dataset import captions_with_clip_index
    from hade.data.readers import read_split
    from hade.eval.dcase import score_dcase
    from hade.eval.stats import format_cis
    from hade.utils.atomic import write_json_atomic

    split = read_split(args.data, args.split, verify_audio=False)
    captions, text_clip = captions_with_clip_index(split)
    names = [Path(c.audio_path).name for c in split.clips]
    result = score_dcase(args.dcase_score, captions, text_clip, names, args.bootstrap, args.seed)
    result["split"] = split.name
    if args.out:
        write_json_atomic(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.dcase_score}: {result['num_listed']} of {len(captions)} captions have their file in the top 10")
        if "ci" in result:
            print(format_cis(result, result["ci"]))
        else:
            print("\n".join(f"T2A {m:<7}{v:>7.1f}" for m, v in result["t2a"].items() if m != "num_queries"))
    return 0


def _evaluate(args: argparse.Namespace):
    """Load the checkpoint and run the evaluation pipeline -> EvalRun (metrics name the checkpoint)."""
    from hade.checkpoint import load
    from hade.data.readers import read_split
    from hade.eval import evaluate as evaluate_mod

    model = load(args.ckpt, device=args.device, compute=args.compute)
    split = read_split(args.data, args.split)
    clip_seconds = args.clip_seconds or model.clip_samples / model.sample_rate
    aux = None
    if args.aux_captions:
        from hade.data.captioner import build_captioner

        aux = build_captioner(args.aux_captions, args.data, args.split).caption(split.clips)
    run = evaluate_mod.evaluate_run(model, split, clip_seconds, args.batch_size, progress=not args.quiet,
                                    aux_captions=aux)
    run.metrics["checkpoint"], run.metrics["compute"] = str(args.ckpt), args.compute
    return run


def _write(args: argparse.Namespace, run) -> None:
    """The files asked for: --out (metrics JSON and per-query results beside it) and --dcase-csv."""
    from hade.eval.per_query import per_query_path, save_per_query
    from hade.utils.atomic import write_json_atomic

    if args.out:
        pq_file = per_query_path(args.out)
        save_per_query(pq_file, run.per_query)
        run.metrics["per_query_file"] = pq_file.name
        write_json_atomic(args.out, run.metrics)
    if args.dcase_csv:
        from hade.eval.dcase import write_dcase_csv

        write_dcase_csv(args.dcase_csv, run.captions, run.per_query)


def _print(metrics: dict, as_json: bool) -> None:
    from hade.eval.metrics import format_metrics_table
    from hade.eval.stats import format_cis

    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    print(format_metrics_table(metrics, metrics["chance"]))
    if "ci" in metrics:
        print(format_cis(metrics, metrics["ci"]))
    if metrics["skipped"]:
        print(f"skipped {len(metrics['skipped'])} item(s); see the JSON output for details")


def run(args: argparse.Namespace) -> int:
    """`hade eval`: print (and with --out write) the metrics, with bootstrap intervals unless --bootstrap 0."""
    from hade.eval.stats import bootstrap_cis

    if args.bootstrap < 0:
        raise InputError(f"--bootstrap: expected 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    if args.dcase_score:
        return _dcase_score(args)
    if args.ckpt is None:
        raise InputError("--ckpt: a checkpoint directory is needed (except with --dcase-score FILE)")
    result = _evaluate(args)
    if args.bootstrap:
        result.metrics["ci"] = bootstrap_cis(result.per_query, args.bootstrap, args.seed)
    _write(args, result)
    _print(result.metrics, args.json)
    return 0
