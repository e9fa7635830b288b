"""`hade` command line: synth, train, eval, demo, ablate, explain (index, search, serve in their packages)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from hade.config import PRECISIONS
from hade.errors import HadeError


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a SynthCaps captioned-audio data set")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--clips", type=int, default=400, help="number of clips over all splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--duration", type=float, default=4.0, help="clip length in seconds")
    p.add_argument("--layout", choices=["clotho", "audiocaps", "wavcaps"], default="clotho")
    p.add_argument("--event-types", default=None, help="comma-separated subset of event types")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a retrieval model")
    p.add_argument("--data", type=Path, required=True, help="data set root (Clotho/AudioCaps/WavCaps/JSONL layout)")
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="run directory (resumed when present)")
    p.add_argument("--head", default=None, help="retrieval head, e.g. dp")
    p.add_argument("--config", type=Path, default=None, help="JSON file with TrainConfig fields (and 'model')")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--audio-encoder", default=None, help="HTSAT preset: htsat-tiny (paper), htsat-cpu (demo)")
    p.add_argument("--text-encoder", default=None, help="'minilm' or a local BERT directory")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="mixed precision: bf16 on CPU or CUDA, fp16 on CUDA")
    p.add_argument("--grad-accum-steps", type=int, default=None,
                   help="split each batch into this many micro-batches (negatives come from the micro-batch)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None,
                   help="activation checkpointing in both encoders")
    p.add_argument("--init-from", default=None,
                   help="start from these weights: a hade checkpoint directory (e.g. from `hade convert`) or an "
                        "HTS-AT / LAION-CLAP / WavCaps checkpoint file (audio encoder only)")
    p.add_argument("--workers", type=int, default=None, dest="num_workers",
                   help="data loader processes that decode audio while the model trains (default: min(4, CPUs per "
                        "training process - 1); 0: decode in the training process)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run directory has a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint under the community protocol")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="checkpoint directory (e.g. RUN/checkpoints/best); not needed with --dcase-score")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="evaluation")
    p.add_argument("--clip-seconds", type=float, default=None, help="default: the training clip length")
    p.add_argument("--batch-size", type=int, default=64)
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
    p.add_argument("--compute", choices=PRECISIONS, default="fp32",
                   help="encoder precision (autocast): bf16 on CPUs with AMX/AVX512-BF16 or CUDA, fp16 on CUDA; "
                        "scores stay fp32")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired comparison of evaluations of one split (intervals, p-values)")
    p.add_argument("results", nargs="+", type=Path,
                   help="metrics JSONs written by `hade eval --out` (their .per_query.npz beside them), or the "
                        ".per_query.npz files; two or more")
    p.add_argument("--names", default=None, help="comma-separated labels (default: the file names)")
    p.add_argument("--baseline", default=None,
                   help="the label to compare against (differences are other − baseline); default: the second of "
                        "two results, the first of more (then Holm-adjusted p-values)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples over clips")
    p.add_argument("--permutations", type=int, default=10000, help="random sign flips of the randomisation test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthesise data, train a small model on CPU, evaluate, show results")
    p.add_argument("--out", type=Path, default=Path("demo-run"))
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None, help="training budget")
    p.add_argument("--head", default=None)
    p.add_argument("--quiet", action="store_true")


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run the rows of one of HADE's tables over several seeds")
    p.add_argument("--table", required=True, choices=["1", "2", "3", "4", "5", "compare", "ood"])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="default: runs/ablate-table{N}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ood-data", type=Path, default=None,
                   help="--table ood: a SynthCaps set of held-out event types (hade synth --event-types ...)")
    p.add_argument("--config", type=Path, default=None, help="base TrainConfig JSON (default: the demo's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--rows", default=None,
                   help="comma-separated subset of the table's rows to run (others are reported when finished)")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hade", description="Audio-text retrieval toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_train, _add_eval, _add_compare, _add_demo, _add_ablate):
        add(sub)
    from hade.apps.convert import add_convert_parser
    from hade.apps.explain import add_explain_parser
    from hade.index.cli import add_index_parsers
    from hade.serve.cli import add_serve_parser

    add_convert_parser(sub)
    add_explain_parser(sub)
    add_index_parsers(sub)
    add_serve_parser(sub)
    return parser


def cmd_synth(args: argparse.Namespace) -> int:
    from hade.data.synthcaps import generate

    events = [e.strip() for e in args.event_types.split(",")] if args.event_types else None
    summary = generate(args.out, clips=args.clips, seed=args.seed, sample_rate=args.sample_rate,
                       duration=args.duration, layout=args.layout, event_types=events)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def train_config_from_args(args: argparse.Namespace):
    from hade.config import TrainConfig, load_json_config

    cfg = load_json_config(args.config, TrainConfig) if args.config else TrainConfig()
    for name in ("epochs", "batch_size", "lr", "max_steps", "seed", "device", "precision", "grad_accum_steps",
                 "grad_checkpointing", "init_from", "num_workers"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.head is not None:
        cfg.model.head = args.head
    if args.audio_encoder is not None:
        cfg.model.audio_encoder = args.audio_encoder
    if args.text_encoder is not None:
        cfg.model.text_encoder = args.text_encoder
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from hade.train.trainer import train

    summary = train(args.data, args.out, train_config_from_args(args), resume=not args.no_resume,
                    progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


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


def cmd_eval(args: argparse.Namespace) -> int:
    from hade.checkpoint import load
    from hade.data.readers import read_split
    from hade.errors import InputError
    from hade.eval import evaluate as evaluate_mod
    from hade.eval.metrics import format_metrics_table
    from hade.eval.per_query import per_query_path, save_per_query
    from hade.eval.stats import bootstrap_cis, format_cis
    from hade.utils.atomic import write_json_atomic

    if args.bootstrap < 0:
        raise InputError(f"--bootstrap: expected 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    if args.dcase_score:
        return _dcase_score(args)
    if args.ckpt is None:
        raise InputError("--ckpt: a checkpoint directory is needed (except with --dcase-score FILE)")
    model = load(args.ckpt, device=args.device, precision=args.compute)
    split = read_split(args.data, args.split)
    clip_seconds = args.clip_seconds or model.clip_samples / model.sample_rate
    aux = None
    if args.aux_captions:
        from hade.data.captioner import build_captioner

        aux = build_captioner(args.aux_captions, args.data, args.split).caption(split.clips)
    run = evaluate_mod.evaluate_run(model, split, clip_seconds, args.batch_size, progress=not args.quiet,
                                    aux_captions=aux)
    metrics = run.metrics
    metrics["checkpoint"], metrics["compute"] = str(args.ckpt), args.compute
    if args.bootstrap:
        metrics["ci"] = bootstrap_cis(run.per_query, args.bootstrap, args.seed)
    if args.out:
        pq_file = per_query_path(args.out)
        save_per_query(pq_file, run.per_query)
        metrics["per_query_file"] = pq_file.name
        write_json_atomic(args.out, metrics)
    if args.dcase_csv:
        from hade.eval.dcase import write_dcase_csv

        write_dcase_csv(args.dcase_csv, run.captions, run.per_query)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics_table(metrics, metrics["chance"]))
        if "ci" in metrics:
            print(format_cis(metrics, metrics["ci"]))
        if metrics["skipped"]:
            print(f"skipped {len(metrics['skipped'])} item(s); see the JSON output for details")
    return 0


def _load_result(path: Path):
    """Per-query results of a `hade eval --out` JSON (via its per_query_file) or of a .per_query.npz."""
    from hade.errors import InputError
    from hade.eval.per_query import load_per_query, per_query_path

    if path.suffix == ".npz":
        return load_per_query(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable metrics JSON of `hade eval --out` ({exc})") from None
    name = meta.get("per_query_file") if isinstance(meta, dict) else None
    if not name:
        raise InputError(f"{path}: has no per-query results (no 'per_query_file'); evaluate again with "
                         f"`hade eval --out {path}` to write them")
    return load_per_query(path.parent / name if (path.parent / name).is_file() else per_query_path(path))


def cmd_compare(args: argparse.Namespace) -> int:
    from hade.errors import InputError
    from hade.eval import stats
    from hade.utils.atomic import write_json_atomic

    if len(args.results) < 2:
        raise InputError("compare: give at least two results (metrics JSONs of `hade eval --out`)")
    names = ([n.strip() for n in args.names.split(",")] if args.names
             else [p.name.removesuffix(".json").removesuffix(".per_query.npz") for p in args.results])
    if len(names) != len(args.results) or len(set(names)) != len(names):
        raise InputError(f"--names: need {len(args.results)} distinct labels, got {names}")
    results = [_load_result(p) for p in args.results]
    for name, pq in zip(names[1:], results[1:]):
        stats.check_same_split(results[0], pq, names[0], name)
    if args.baseline is not None and args.baseline not in names:
        raise InputError(f"--baseline: {args.baseline!r} is not one of the labels {names}")
    common = (args.bootstrap, args.permutations, args.seed)
    if len(results) == 2:  # A - B, with B the baseline (the second result unless --baseline names the first)
        a, b = (1, 0) if args.baseline == names[0] else (0, 1)
        out = stats.compare(results[a], results[b], *common)
        text = stats.format_comparison(out, names[a], names[b])
    else:
        baseline = args.baseline or names[0]
        systems = [stats.Named(n, stats.directions(pq)) for n, pq in zip(names, results)]
        out = {"baseline": baseline, "systems": stats.compare_many(systems, baseline, *common),
               "settings": stats.settings(args.bootstrap, args.seed, args.permutations)}
        text = stats.format_many(out["systems"], baseline, out["settings"])
    if args.out:
        write_json_atomic(args.out, out)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hade.demo import run_demo

    return run_demo(args.out, clips=args.clips, minutes=args.minutes, head=args.head, progress=not args.quiet)


def cmd_ablate(args: argparse.Namespace) -> int:
    from hade.config import TrainConfig, load_json_config
    from hade.demo import demo_config
    from hade.experiments.ablate import ablate

    base = load_json_config(args.config, TrainConfig) if args.config else demo_config("dp", epochs=6)
    if args.epochs is not None:
        base.epochs = args.epochs
    out = args.out or Path(f"runs/ablate-table{args.table}")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    ablate(args.table, args.data, out, seeds=args.seeds, base=base, progress=not args.quiet, ood_data=args.ood_data,
           rows=rows)
    print((out / f"table{args.table}.md").read_text())
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from hade.apps.explain import cmd_explain as run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from hade.serve.cli import cmd_serve as run

    return run(args)


def cmd_convert(args: argparse.Namespace) -> int:
    from hade.apps.convert import cmd_convert as run

    return run(args)


COMMANDS = {"convert": cmd_convert, "synth": cmd_synth, "train": cmd_train, "eval": cmd_eval, "compare": cmd_compare,
            "demo": cmd_demo, "ablate": cmd_ablate,
            "explain": cmd_explain, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    from hade.index.cli import INDEX_COMMANDS

    COMMANDS.update(INDEX_COMMANDS)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HadeError as e:
        print(f"hade {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hade {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
