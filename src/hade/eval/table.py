"""The fixed-width metrics table `hade eval` and the demo print."""
from __future__ import annotations

from typing import Any, Mapping

from hade.eval.results import RetrievalMetrics


_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")


def _cell(v: Any, rank: bool) -> str:
    if v is None:
        return "-"
    if rank and float(v) == int(v):
        return f"{int(v)}"
    return f"{float(v):.2f}" if not rank else f"{float(v):.1f}"


def format_metrics_table(metrics: RetrievalMetrics, chance: RetrievalMetrics | None = None,
                         multi: Mapping[str, Any] | None = None) -> str:
    """Fixed-width text table: rows T2A / A2T (and chance rows), columns R@1 R@5 R@10 mAP@10 medR meanR;
    then the multi-relevance T2A line (`multi`: an `EvalMetrics.t2a_multi` row) and the tie rule.
    Missing values print as "-"."""
    rows: list[tuple[str, Mapping[str, Any]]] = [("T2A", metrics.t2a), ("A2T", metrics.a2t)]
    if chance is not None:
        rows += [("T2A chance", chance.t2a), ("A2T chance", chance.a2t)]
    width0 = max(len("direction"), *(len(r[0]) for r in rows))
    widths = [max(len(col), 8) for col in _COLUMNS]
    header = "direction".ljust(width0) + "".join(" " + c.rjust(w) for c, w in zip(_COLUMNS, widths))
    lines = [header, "-" * len(header)]
    for label, m in rows:
        cells = [_cell(m.get(col), col in ("medR", "meanR")) for col in _COLUMNS]
        lines.append(label.ljust(width0) + "".join(" " + v.rjust(w) for v, w in zip(cells, widths)))
    if multi is not None:
        cells = "  ".join(f"{k} {multi[k]:.2f}" for k in multi if k.startswith("mAP@"))
        lines.append(f"T2A, several relevant files per query: {cells}  ({multi['num_queries']} queries, "
                     f"{multi['relevant_per_query']:.1f} relevant each; AP normalised by all relevant files)")
    lines.append(f"ties: {metrics.tie_rule}")
    return "\n".join(lines)
