"""The text of `hade ablate`'s tables (hade.experiments.ablate, which re-exports these names): each row's
mean ± std over seeds (`summarise`), beside the paper's numbers where it has them (`markdown_table`) or
with mAP@10 and costs (`markdown_other`), and the rows' differences to the baseline (`markdown_differences`)."""
from __future__ import annotations

import statistics
from pathlib import Path

from hade.eval.differences import DETECTABLE_NOTE, HolmDifference
from hade.experiments.paper_tables import COLUMNS, DATASET, PAPER
from hade.experiments.records import RowDifferences, RowSummary, RunResult, Spread

DIFF_METRICS = ("R@1", "R@5", "R@10", "mAP@10")
METRIC_KEYS = (("t2a", "R@1"), ("t2a", "R@5"), ("t2a", "R@10"), ("a2t", "R@1"), ("a2t", "R@5"), ("a2t", "R@10"))


def summarise(results: list[RunResult]) -> RowSummary:
    """Mean and (sample) std over seeds for each reported metric."""
    columns = {column: Spread.of([r.metrics.direction(direction)[key] for r in results])
               for (direction, key), column in zip(METRIC_KEYS, COLUMNS)}
    for direction in ("t2a", "a2t"):
        columns[f"{direction.upper()} mAP@10"] = Spread.of([r.metrics.direction(direction)["mAP@10"] for r in results])
    return RowSummary(columns, statistics.fmean(r.train.seconds for r in results),
                      statistics.fmean(r.metrics.score_seconds_per_1k2 for r in results))


def markdown_other(table: str, summary: dict[str, RowSummary], seeds: int, data_dir: Path) -> str:
    """Tables without paper numbers (compare, ood): ours only, with mAP@10 and costs."""
    title = {"compare": "All systems on one data set and budget",
             "ood": "Out of domain: trained without the held-out event types, tested on clips made only of them"}
    cols = list(COLUMNS) + ["T2A mAP@10", "A2T mAP@10"]
    lines = [f"# {title[table]} — `{data_dir}`, {seeds} seed(s), mean ± std", "",
             "| head | " + " | ".join(cols) + " | train s | score s / 1k×1k |", "|---" * (len(cols) + 3) + "|"]
    for name, row in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{row.columns[c].mean:.1f} ± {row.columns[c].std:.1f}" for c in cols)
                     + f" | {row.train_seconds:.0f} | {row.score_seconds_per_1k2:.3f} |")
    return "\n".join(lines) + "\n"


def diff_cell(r: HolmDifference | None, p: float | None = None, det: str = "det.") -> str:
    """``+Δ [lo, hi] p=…, det. …`` (p: the given one, else the Holm-adjusted one, else the plain one); n/a for
    None."""
    if r is None:
        return "n/a"
    p = next(v for v in (p, r.p_holm, r.p) if v is not None)
    return f"{r.diff:+.1f} [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}] p={p:.3g}, {det} {r.detectable:.1f}"


def markdown_differences(diffs: RowDifferences) -> str:
    """The rows' differences to the baseline: ``+Δ [95 % CI] p=…, det. …`` per column (Holm-adjusted p; det.:
    the smallest true difference the comparison detects with 80 % power)."""
    base, s = diffs.baseline, diffs.settings
    cols = [(d, m) for d in ("t2a", "a2t") for m in DIFF_METRICS]
    lines = [f"## Difference to {base} (seeds pooled per query; 95 % paired-bootstrap interval over clips, "
             f"{s.resamples} resamples; two-sided sign-flip p, {s.permutations} flips, Holm-adjusted over "
             f"the rows; seed {s.seed}; {DETECTABLE_NOTE})", "",
             "| row | " + " | ".join(f"{d.upper()} {m}" for d, m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, res in diffs.rows.items():
        cells = [diff_cell(None if res is None else res[d][m]) for d, m in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not diffs.rows:
        lines.append(f"| (no row to compare with {base} yet) |" + " |" * len(cols))
    return "\n".join(lines) + "\n"


def markdown_table(table: str, summary: dict[str, RowSummary], seeds: int, data_dir: Path,
                   diffs: RowDifferences | None = None) -> str:
    main = _markdown_main(table, summary, seeds, data_dir)
    return main if diffs is None else main + "\n" + markdown_differences(diffs)


def _markdown_main(table: str, summary: dict[str, RowSummary], seeds: int, data_dir: Path) -> str:
    if table not in PAPER:
        return markdown_other(table, summary, seeds, data_dir)
    paper = PAPER[table]
    lines = [f"# HADE Table {table}: ours on `{data_dir}` ({seeds} seed(s), mean ± std) vs. the paper "
             f"({DATASET[table]})", "",
             "| row | " + " | ".join(f"{c} (ours)" for c in COLUMNS) + " | T2A mAP@10 (ours) | "
             + " | ".join(f"{c} (paper)" for c in COLUMNS) + " |",
             "|---" * (2 * len(COLUMNS) + 2) + "|"]
    for name, row in summary.items():
        ours = [f"{row.columns[c].mean:.1f} ± {row.columns[c].std:.1f}" for c in COLUMNS]
        theirs = [f"{v:.1f}" for v in paper.get(name, ())] or ["–"] * len(COLUMNS)
        lines.append(f"| {name} | " + " | ".join(ours) + f" | {row.columns['T2A mAP@10'].mean:.1f} | "
                     + " | ".join(theirs) + " |")
    return "\n".join(lines) + "\n"
