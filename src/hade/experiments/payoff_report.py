"""The text of `hade payoff`'s report (hade.experiments.payoff, which re-exports `markdown`): each cell's rows,
their differences to DP, and THA+DCR − DP with Holm over every cell."""
from __future__ import annotations

from hade.eval.differences import HolmDifference
from hade.experiments.ablate_report import diff_cell
from hade.experiments.payoff_plot import HEADLINE
from hade.experiments.records import STUDY_ROW, PayoffReport


def _cell_fmt(r: HolmDifference | None, p: float | None = None) -> str:
    return diff_cell(r, p, det="detectable")


def markdown(report: PayoffReport) -> str:
    """Two tables: each cell's rows (mean ± std over seeds), then each row's difference to DP."""
    cols = ("T2A R@1", "T2A R@5", "T2A R@10", "T2A mAP@10", "A2T R@1")
    lines = ["## Rows (mean ± std over seeds)", "",
             "| cell | evaluated on | seeds | head | " + " | ".join(cols) + " | train s |", "|---" * (len(cols) + 5) + "|"]
    for c in report.cells:
        for head, s in c.summary.items():
            lines.append(f"| {c.name} | {c.evaluated_on} | {c.seeds} | {head} | "
                         + " | ".join(f"{s.columns[k].mean:.1f} ± {s.columns[k].std:.1f}" for k in cols)
                         + f" | {s.train_seconds:.0f} |")
    metrics = [("t2a", "R@1"), ("t2a", "R@10"), ("t2a", "mAP@10"), ("a2t", "R@1")]
    lines += ["", "## Difference to DP (seeds pooled per query; 95 % paired-bootstrap interval over clips; "
              "sign-flip p, Holm over the cell's rows; detectable: 80 % power at 5 %)", "",
              "| cell | row | " + " | ".join(f"{d.upper()} {m}" for d, m in metrics) + " |",
              "|---" * (len(metrics) + 2) + "|"]
    for c in report.cells:
        for row, res in c.differences.rows.items():
            lines.append(f"| {c.name} | {row} | "
                         + " | ".join(_cell_fmt(None if res is None else res[d][m]) for d, m in metrics) + " |")
    waiting = [f"{c.name} pools {c.seeds} seed(s) per head, the count every head has finished ("
               + ", ".join(f"{h} {n}" for h, n in c.finished_seeds.items()) + ")"
               for c in report.cells if any(n != c.seeds for n in c.finished_seeds.values())]
    if waiting:
        lines += [""] + [f"- {w}" for w in waiting]
    lines += ["", "## THA+DCR − DP, Holm over all cells", "", "| cell | T2A R@1 | T2A mAP@10 |", "|---|---|---|"]
    for c in report.cells:
        res = c.differences.rows.get(STUDY_ROW)
        lines.append(f"| {c.name} | " + " | ".join(_cell_fmt(res[d][m] if res else None, c.study_p.get((d, m)))
                                                  for d, m in HEADLINE) + " |")
    return "\n".join(lines) + "\n"
