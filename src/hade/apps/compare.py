"""`hade compare A.json B.json ...`: paired comparison of evaluations of one split (hade.eval.stats). A system
given as comma-separated results (its seeds: `a0.json,a1.json,a2.json`) is compared with its queries' values
averaged over them, as `hade ablate` pools seeds."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hade.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade compare` to a sub-parser set."""
    p = sub.add_parser("compare", help="paired comparison of evaluations of one split (intervals, p-values)")
    p.add_argument("results", nargs="+",
                   help="metrics JSONs written by `hade eval --out` (their .per_query.npz beside them), or the "
                        ".per_query.npz files; two or more. Comma-separated results (a system's seeds, "
                        "e.g. dp0.json,dp1.json,dp2.json) are one system, each query's value averaged over them "
                        "(medR is then left out)")
    p.add_argument("--names", default=None, help="comma-separated labels (default: the file names)")
    p.add_argument("--baseline", default=None,
                   help="the label to compare against (differences are other − baseline); default: the second of "
                        "two results, the first of more (then Holm-adjusted p-values)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples over clips")
    p.add_argument("--permutations", type=int, default=10000, help="random sign flips of the randomisation test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def read_metrics(path: Path) -> Any:
    """The parsed metrics JSON of `hade eval --out` at `path`; None for a .per_query.npz."""
    if path.suffix == ".npz":
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable metrics JSON of `hade eval --out` ({exc})") from None


def load_result(path: Path, meta: Any):
    """Per-query results of a `hade eval --out` JSON (`meta`, read by `read_metrics`, names its per_query_file)
    or of a .per_query.npz."""
    from hade.eval.per_query import load_per_query, per_query_path

    if path.suffix == ".npz":
        return load_per_query(path)
    name = meta.get("per_query_file") if isinstance(meta, dict) else None
    if not name:
        raise InputError(f"{path}: has no per-query results (no 'per_query_file'); evaluate again with "
                         f"`hade eval --out {path}` to write them")
    return load_per_query(path.parent / name if (path.parent / name).is_file() else per_query_path(path))


def _encoding(meta: Any) -> tuple[float, int] | None:
    """(clip_seconds, segments) a metrics JSON records; None for a .npz or an older JSON."""
    if not isinstance(meta, dict):
        return None
    try:
        return float(meta["clip_seconds"]), int(meta["segments"])
    except (KeyError, TypeError, ValueError):
        return None


def _note_encodings(metas: list[Any], names: list[str]) -> None:
    """Say on stderr when the results encoded different lengths of each clip: the differences then include it."""
    seen = {name: enc for name, enc in zip(names, map(_encoding, metas)) if enc is not None}
    if len(set(seen.values())) > 1:
        told = ", ".join(f"{name} {sec:g} s ({seg} segment{'s' * (seg > 1)})" for name, (sec, seg) in seen.items())
        print(f"hade compare: note: the results encoded different lengths of each clip ({told}); their "
              "differences include that", file=sys.stderr)


def _label(path: Path) -> str:
    return path.name.removesuffix(".json").removesuffix(".per_query.npz")


def _group_label(paths: list[Path]) -> str:
    """A file's label; for several (seeds), their common start without a trailing 'seed' and separators."""
    labels = [_label(p) for p in paths]
    if len(labels) == 1:
        return labels[0]
    common = os.path.commonprefix(labels).rstrip("-_. ")
    common = common.removesuffix("seed").rstrip("-_. ")
    return common or f"{labels[0]} (+{len(labels) - 1})"


def _groups(results: list[str]) -> list[list[Path]]:
    for item in results:
        if any(not part.strip() for part in item.split(",")):
            raise InputError(f"compare: an empty result in {item!r} (a stray comma?)")
    return [[Path(part) for part in item.split(",")] for item in results]


def _labels(args: argparse.Namespace, groups: list[list[Path]]) -> list[str]:
    names = ([n.strip() for n in args.names.split(",")] if args.names else [_group_label(g) for g in groups])
    if len(names) != len(groups) or len(set(names)) != len(names):
        raise InputError(f"--names: need {len(groups)} distinct labels, got {names}")
    if args.baseline is not None and args.baseline not in names:
        raise InputError(f"--baseline: {args.baseline!r} is not one of the labels {names}")
    return names


def run(args: argparse.Namespace) -> int:
    """Compare two results (A − B) or several against a baseline (Holm-adjusted); print a table or JSON."""
    from hade.eval import stats
    from hade.utils.atomic import write_json_atomic

    groups = _groups(args.results)
    if len(groups) < 2:
        raise InputError("compare: give at least two results (metrics JSONs of `hade eval --out`)")
    names = _labels(args, groups)
    paths = [p for g in groups for p in g]
    metas = [read_metrics(p) for p in paths]
    loaded = iter([load_result(p, meta) for p, meta in zip(paths, metas)])
    members = [[next(loaded) for _ in g] for g in groups]
    _note_encodings(metas, [_label(p) for p in paths])
    for g, m in zip(groups[1:], members[1:]):  # each system's first against the first; its others: pooling checks
        stats.check_same_split(members[0][0], m[0], str(groups[0][0]), str(g[0]))
    pooled = any(len(g) > 1 for g in groups)
    metrics = stats.POOLED_METRICS if pooled else stats.REPORT_METRICS
    values = [stats.pooled_directions(m, [str(p) for p in g], metrics) if pooled else stats.directions(m[0])
              for g, m in zip(groups, members)]
    common = (args.bootstrap, args.permutations, args.seed)
    if len(groups) == 2:  # A - B, with B the baseline (the second result unless --baseline names the first)
        a, b = (1, 0) if args.baseline == names[0] else (0, 1)
        comparison = stats.compare_directions(values[a], values[b], *common, metrics=metrics)
        out = comparison.to_dict()
        text = stats.format_comparison(comparison, names[a], names[b])
    else:
        baseline = args.baseline or names[0]
        many = stats.compare_many([stats.Named(n, v) for n, v in zip(names, values)], baseline, *common,
                                  metrics=metrics)
        out, text = many.to_dict(), stats.format_many(many)
    if pooled:
        out["pooling"] = {"rule": "each query's value averaged over the results of a system (its seeds)",
                          "systems": {n: [str(p) for p in g] for n, g in zip(names, groups)}}
        text += "\n" + "; ".join(f"{n}: {len(g)} results pooled per query" for n, g in zip(names, groups))
    if args.out:
        write_json_atomic(args.out, out)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0
