"""The fixed-width metrics table `hade eval` and the demo print."""
from __future__ import annotations

from typing import Any, Mapping

from hade.errors import InputError


_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")


def _cell(v: Any, rank: bool) -> str:
    if v is None:
        return "-"
    if rank and float(v) == int(v):
        return f"{int(v)}"
    return f"{float(v):.2f}" if not rank else f"{float(v):.1f}"


def format_metrics_table(metrics: Mapping[str, Any], chance: Mapping[str, Any] | None = None) -> str:
    """Fixed-width text table: rows T2A / A2T (and chance rows), columns R@1 R@5 R@10 mAP@10 medR meanR.

    ``metrics`` is the output of :func:`retrieval_metrics` (or a dict with a "t2a" and/or "a2t"
    entry); ``chance`` the output of :func:`chance_metrics`.  Missing values print as "-".
    """
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for key, label in (("t2a", "T2A"), ("a2t", "A2T")):
        if isinstance(metrics.get(key), Mapping):
            rows.append((label, metrics[key]))
    if chance is not None:
        for key, label in (("t2a", "T2A chance"), ("a2t", "A2T chance")):
            if isinstance(chance.get(key), Mapping):
                rows.append((label, chance[key]))
    if not rows:
        raise InputError('format_metrics_table: metrics has neither a "t2a" nor an "a2t" entry')
    width0 = max(len("direction"), *(len(r[0]) for r in rows))
    widths = [max(len(col), 8) for col in _COLUMNS]
    header = "direction".ljust(width0) + "".join(" " + c.rjust(w) for c, w in zip(_COLUMNS, widths))
    lines = [header, "-" * len(header)]
    for label, m in rows:
        cells = [_cell(m.get(col), col in ("medR", "meanR")) for col in _COLUMNS]
        lines.append(label.ljust(width0) + "".join(" " + v.rjust(w) for v, w in zip(cells, widths)))
    multi = metrics.get("t2a_multi")
    if isinstance(multi, Mapping):
        cells = "  ".join(f"{k} {multi[k]:.2f}" for k in multi if k.startswith("mAP@"))
        lines.append(f"T2A, several relevant files per query: {cells}  ({multi['num_queries']} queries, "
                     f"{multi['relevant_per_query']:.1f} relevant each; AP normalised by all relevant files)")
    tie = metrics.get("tie_rule")
    if tie:
        lines.append(f"ties: {tie}")
    return "\n".join(lines)
