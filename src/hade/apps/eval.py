"""`hade eval`: evaluate a checkpoint under the community protocol (hade.eval.evaluate's pipeline), with
`--relevance` also under several relevant files per query (DCASE 2025, mAP@16), or score a DCASE submission
(`--dcase-score`, the 2022-2024 top-10 format or the 2025 score matrix)."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
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
    p.add_argument("--clip-seconds", type=seconds, default=None,
                   help="seconds of each clip to encode, from its start (default: the training clip length); "
                        "beyond the audio encoder's longest input (10 s for HTSAT, PaSST and BEATs) a clip is "
                        "encoded in segments whose clip vectors are averaged over those holding audio, as the "
                        "DCASE 2025 baseline does with 30")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--out", type=Path, default=None,
                   help="write the metrics JSON here, and the per-query results beside it (NAME.per_query.npz)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples (over clips) for the 95%% intervals; 0: no intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (results are reproducible)")
    p.add_argument("--dcase-csv", type=Path, default=None,
                   help="also write a DCASE retrieval submission here (format: --dcase-format)")
    p.add_argument("--dcase-format", choices=("top10", "scores"), default="top10",
                   help="top10: caption,fname_1..fname_10 (DCASE 2022-2024); scores: index,<file names> with every "
                        "caption's score for every file (DCASE 2025, what mAP@16 needs)")
    p.add_argument("--dcase-score", type=Path, default=None,
                   help="score this DCASE submission CSV (either format, told apart by its header) against "
                        "--data/--split (no checkpoint needed)")
    p.add_argument("--relevance", type=Path, default=None,
                   help="DCASE 2025 relevance annotations (CSV: query,audio_filenames): also report mAP@16 over "
                        "several relevant files per query")
    p.add_argument("--aux-captions", default=None,
                   help="HCI+AC: 'synthcaps' (simulated captioner) or a JSON/CSV file of generated captions")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32",
                   help="encoder precision (autocast): bf16 on CPUs with AMX/AVX512-BF16 or CUDA, fp16 on CUDA; "
                        "scores stay fp32")
    p.add_argument("--parts", action="store_true",
                   help="a sum head (tha+dcr, tha+dp): also rank by each part alone and report its metrics and "
                        "the spread of its scores (hade.eval.parts)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true")
    return p


def _check_output(path: Path | None, flag: str) -> None:
    """Before any work: an output path must name a file (not a folder) whose parent can be a folder."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file name (e.g. {path / 'out.csv'})")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")


def _dcase_score(args: argparse.Namespace, relevance) -> int:
    from hade.data.dataset import captions_with_clip_index
    from hade.data.readers import read_split
    from hade.eval.dcase import score_dcase
    from hade.eval.dcase2025 import is_score_csv, score_2025
    from hade.eval.stats import format_cis
    from hade.utils.atomic import write_json_atomic

    split = read_split(args.data, args.split, verify_audio=False)
    captions, text_clip = captions_with_clip_index(split)
    names = [Path(c.audio_path).name for c in split.clips]
    if is_score_csv(args.dcase_score):
        result = score_2025(args.dcase_score, captions, text_clip, names, relevance, args.bootstrap, args.seed)
    elif relevance is not None:
        raise InputError(f"--relevance: {args.dcase_score} is a top-10 submission (caption,fname_1..fname_10); "
                         f"mAP@16 needs 16 ranks: write a score matrix (hade eval --dcase-format scores)")
    else:
        result = score_dcase(args.dcase_score, captions, text_clip, names, args.bootstrap, args.seed)
    report = result.to_dict() | {"split": split.name}
    if args.out:
        write_json_atomic(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.dcase_score}: {result.num_listed} of {len(captions)} captions have their file in the top 10")
        if result.ci is not None:
            estimates = {"t2a": result.t2a} | ({"t2a_multi": result.t2a_multi} if result.t2a_multi is not None else {})
            print(format_cis(estimates, result.ci))
        else:
            print("\n".join(f"T2A {m:<7}{v:>7.1f}" for m, v in result.t2a.items() if m != "num_queries"))
            if result.t2a_multi is not None:
                print("\n".join(f"T2Am {m:<7}{result.t2a_multi[m]:>6.1f}" for m in ("mAP@16", "mAP@10")))
    return 0


def _evaluate(args: argparse.Namespace, relevance=None):
    """Load the checkpoint and run the evaluation pipeline -> (EvalRun, its eval.json: the metrics and what was
    evaluated: checkpoint, compute, clip_seconds, segments, parts); with `relevance`
    (hade.eval.relevance.Relevance) also the multi-relevance metrics."""
    from hade.checkpoint import load
    from hade.data.readers import read_split
    from hade.eval import evaluate as evaluate_mod
    from hade.models.segments import segment_count

    model = load(args.ckpt, device=args.device, compute=args.compute)
    split = read_split(args.data, args.split)
    clip_seconds = args.clip_seconds or model.clip_seconds
    aux = None
    if args.aux_captions:
        from hade.data.captioner import build_captioner

        aux = build_captioner(args.aux_captions, args.data, args.split).caption(split.clips)
    run = evaluate_mod.evaluate_run(model, split, clip_seconds, args.batch_size, progress=not args.quiet,
                                    aux_captions=aux, parts=args.parts)
    if relevance is not None:
        evaluate_mod.add_relevance(run, relevance)
    # what of each clip was encoded: its first clip_seconds, in `segments` encoder inputs (hade.models.segments)
    evaluated = {"checkpoint": str(args.ckpt), "compute": args.compute, "clip_seconds": float(clip_seconds),
                 "segments": segment_count(model.clip_input_samples(clip_seconds), model.max_samples)}
    if run.parts is not None:
        evaluated["parts"] = [r.to_dict() for r in run.parts]
    return run, evaluated


def _write(args: argparse.Namespace, run, report: dict) -> None:
    """The files asked for: --out (`report`, the metrics JSON, and per-query results beside it) and --dcase-csv."""
    from hade.eval.per_query import per_query_path, save_per_query
    from hade.utils.atomic import write_json_atomic

    if args.out:
        pq_file = per_query_path(args.out)
        save_per_query(pq_file, run.per_query)
        report["per_query_file"] = pq_file.name
        write_json_atomic(args.out, report)
    if args.dcase_csv and args.dcase_format == "scores":
        from hade.eval.dcase2025 import write_score_csv

        write_score_csv(args.dcase_csv, run.captions, run.per_query.file_names, run.scores.numpy())
    elif args.dcase_csv:
        from hade.eval.dcase import write_dcase_csv

        write_dcase_csv(args.dcase_csv, run.captions, run.per_query)


def _print(run, report: dict, as_json: bool) -> None:
    from hade.eval.metrics import format_metrics_table
    from hade.eval.stats import format_cis

    if as_json:
        print(json.dumps(report, indent=2))
        return
    metrics = run.metrics
    print(format_metrics_table(metrics, metrics.chance, metrics.t2a_multi))
    if metrics.ci is not None:
        print(format_cis(metrics.to_dict(), metrics.ci))
    if run.parts is not None:
        from hade.eval.parts import format_parts

        print("\neach part ranking alone; spread: mean over captions of the std of its scores over the clips")
        print(format_parts(run.parts))
    if metrics.skipped:
        print(f"skipped {len(metrics.skipped)} item(s); see the JSON output for details")


def run(args: argparse.Namespace) -> int:
    """`hade eval`: print (and with --out write) the metrics, with bootstrap intervals unless --bootstrap 0."""
    from hade.eval.stats import bootstrap_cis

    if args.bootstrap < 0:
        raise InputError(f"--bootstrap: expected 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    _check_output(args.out, "--out")
    _check_output(args.dcase_csv, "--dcase-csv")
    relevance = None
    if args.relevance:
        from hade.eval.relevance import read_relevance

        relevance = read_relevance(args.relevance)  # read before the (long) evaluation: errors come first
    if args.dcase_score:
        return _dcase_score(args, relevance)
    if args.ckpt is None:
        raise InputError("--ckpt: a checkpoint directory is needed (except with --dcase-score FILE)")
    result, evaluated = _evaluate(args, relevance)
    if args.bootstrap:
        result.metrics = replace(result.metrics, ci=bootstrap_cis(result.per_query, args.bootstrap, args.seed))
    report = result.metrics.to_dict() | evaluated
    _write(args, result, report)
    _print(result, report, args.json)
    return 0
