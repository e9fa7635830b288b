"""`hade classify`: zero-shot classification of audio files with any checkpoint (hade.eval.zero_shot).

    hade classify --ckpt C --labels labels.txt [--template "This is a sound of {label}."] [--top-k 5]
                  [--json] [--out FILE.json] [--csv FILE.csv] AUDIO_OR_FOLDER...
    hade classify --ckpt C --eval FOLDER [--labels ...] [--out FILE.json]

Folders are searched recursively for the audio files `hade index` takes. A file that cannot be decoded is
skipped and reported (on stderr, and under "skipped" in the JSON); the others are classified.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hade.apps.argtypes import positive_int, seconds
from hade.errors import InputError
from hade.utils.atomic import write_text_atomic


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("classify", help="zero-shot classification of audio files against text labels")
    p.add_argument("audio", nargs="*", type=Path,
                   help="audio files, or folders searched recursively for audio files")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint directory (e.g. from `hade convert`)")
    p.add_argument("--labels", default=None,
                   help="a file with one label per line, or a comma-separated list ('dog,rain,siren'); "
                        "with --eval: default the folder's classes")
    p.add_argument("--template", default=None, help='prompt template with {label} (default: "This is a sound of '
                                                    '{label}.")')
    p.add_argument("--top-k", type=positive_int, default=5,
                   help="labels to report per file and per window (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (instead of the text listing)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    p.add_argument("--csv", type=Path, default=None, help="also write the results as CSV to this file")
    p.add_argument("--eval", type=Path, default=None,
                   help="labelled folder (ESC-50's meta/esc50.csv + audio/, or one sub-folder per class): "
                        "report accuracy and mAP instead of classifying AUDIO")
    p.add_argument("--window", type=seconds, default=None,
                   help="window seconds for long files (default: the model's clip)")
    p.add_argument("--hop", type=seconds, default=None, help="hop seconds between windows (default: half the window)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    if args.eval is None and not args.audio:
        raise InputError("give audio files to classify, or --eval FOLDER")
    if args.eval is not None and args.audio:
        raise InputError("--eval evaluates a labelled folder; do not also give audio files")
    if args.eval is None and not args.labels:
        raise InputError("--labels is required (a file with one label per line, or 'a,b,c')")
    if args.eval is not None and args.csv is not None:
        raise InputError("--eval reports metrics: use --out FILE.json, not --csv")


def _print_results(results) -> None:
    for r in results:
        print(r.path)
        for p in r.top:
            print(f"  {p.probability:7.2%}  {p.score:+.4f}  {p.label}")
        for w in r.windows:
            best = w.top[0]
            print(f"    [{w.start:8.2f}-{w.end:8.2f} s] {best.label} ({best.probability:.2%})")


def _evaluate(args: argparse.Namespace, model, labels: list[str] | None, template: str) -> int:
    from hade.eval import zero_shot

    metrics = zero_shot.evaluate(model, args.eval, labels, template, batch_size=args.batch_size, window=args.window,
                                 hop=args.hop, top_k=args.top_k, progress=not args.quiet)
    _report_skipped(metrics.skipped)
    text = json.dumps(metrics.to_dict(), indent=2)
    if args.out is not None:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


def _report_skipped(skipped) -> None:
    for item in skipped:
        print(f"hade classify: skipped {item.path}: {item.reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from hade import load
    from hade.data.audio import AUDIO_EXTENSIONS
    from hade.eval import zero_shot

    _check(args)
    template = args.template or zero_shot.DEFAULT_TEMPLATE
    labels = zero_shot.read_labels(args.labels) if args.labels else None
    zero_shot.prompts(["x"], template)  # a bad template fails before the model is loaded
    files = zero_shot.audio_files(args.audio) if args.eval is None else []
    if args.eval is None and not files:
        raise InputError(f"no audio files in {', '.join(map(str, args.audio))} (looked for "
                         f"{', '.join(AUDIO_EXTENSIONS)})")
    model = load(args.ckpt, device=args.device)
    if args.eval is not None:
        return _evaluate(args, model, labels, template)
    clf = zero_shot.ZeroShotClassifier(model, labels, template, window=args.window, hop=args.hop,
                                       batch_size=args.batch_size)
    done = clf.classify_all(files, args.top_k, progress=not args.quiet)
    _report_skipped(done.skipped)
    if not done.results:
        raise InputError(f"none of the {len(files)} audio files could be decoded")
    if args.out is not None:
        zero_shot.write_json(done, args.out)
    if args.csv is not None:
        zero_shot.write_csv(done.results, args.csv)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2))
    else:
        _print_results(done.results)
    return 0


__all__ = ["add_parser", "run"]
