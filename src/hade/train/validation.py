"""What a validation looks at and how it is scored: the fixed validation subset (`validate_clips`) and the
selection score (`select_metric`) that picks the best checkpoint."""
from __future__ import annotations

import numpy as np

from hade.data.types import SplitData
from hade.errors import InputError
from hade.eval.results import RetrievalMetrics


def selection_score(metrics: RetrievalMetrics, metric: str) -> float:
    """The score of validation `metrics` (hade.eval.evaluate) that the best checkpoint maximises:
    t2a_r_sum (T2A R@1+R@5+R@10), r_sum (both directions) or map10 (mean of both mAP@10)."""
    t2a, a2t = metrics.t2a, metrics.a2t
    if metric == "t2a_r_sum":
        return t2a["R@1"] + t2a["R@5"] + t2a["R@10"]
    if metric == "r_sum":
        return sum(t2a[k] + a2t[k] for k in ("R@1", "R@5", "R@10"))
    if metric == "map10":
        return (t2a["mAP@10"] + a2t["mAP@10"]) / 2
    raise InputError(f"select_metric: expected t2a_r_sum, r_sum or map10, got {metric!r}")


def validation_subset(split: SplitData, clips: int | None) -> SplitData:
    """The fixed validation subset: `clips` clips evenly spaced over the split sorted by clip id (the same
    at every validation and after a resume); the whole split when `clips` is None or not smaller."""
    if clips is None or clips >= len(split.clips):
        return split
    ordered = sorted(split.clips, key=lambda clip: clip.clip_id)
    picks = np.linspace(0, len(ordered) - 1, clips).round().astype(int)  # distinct: spacing >= 1
    return SplitData(split.name, [ordered[i] for i in picks], list(split.problems))
