"""What each part of a sum head contributes (`hade eval --parts`): THA+DCR scores S = S_THA + S_DCR, and
the sum ranks mostly like the part whose scores vary most over the candidates.

For the whole head and for each part alone (`RetrievalHead.summed_parts`), on one split:
* its retrieval metrics when it ranks alone (T2A R@1, R@10, mAP@10, A2T R@1; the community protocol);
* its spread: the mean over captions of the standard deviation of its scores over the clips. A part
  whose spread is small next to the others' hardly moves the sum's ranking, however good it is alone.

The parts' score matrices are computed once each and summed for the whole head (exactly the head's
`score`), so `--parts` costs what a plain evaluation costs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hade.errors import InputError
from hade.eval.metrics import retrieval_metrics
from hade.eval.results import RetrievalMetrics
from hade.models.heads import score_all
from hade.models.heads.reprs import Reprs, reprs_to
from hade.models.retrieval import RetrievalModel

WHOLE = "sum"  # the row of the whole head
PART_METRICS = (("t2a", "R@1"), ("t2a", "R@10"), ("t2a", "mAP@10"), ("a2t", "R@1"))


@dataclass(frozen=True)
class PartResult:
    """One row: `name` (a part, or WHOLE), its metrics ranking alone ({"T2A R@1": percent, ...}) and its
    spread (mean over captions of the std of its scores over the clips)."""

    name: str
    metrics: dict[str, float]
    spread: float

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "metrics": dict(self.metrics), "spread": self.spread}


def require_parts(model: RetrievalModel) -> None:
    """InputError unless the model's head is a sum of parts."""
    if not model.head.summed_parts():
        raise InputError(f"--parts: head {model.config.head!r} is not a sum of parts; it is for heads such as "
                         "tha+dcr and tha+dp, whose score adds their parts' scores")


@torch.no_grad()
def part_scores(model: RetrievalModel, text: Reprs, audio: Reprs, block: int = 1024) -> dict[str, torch.Tensor]:
    """{part: [T, A] scores of that part alone} for every caption and clip (float32, CPU)."""
    require_parts(model)
    text, audio = reprs_to(text, model.device), reprs_to(audio, model.device)
    return {name: score_all(part, text, audio, text_block=block, audio_block=block)
            for name, part in model.head.summed_parts().items()}


def spread(scores: np.ndarray) -> float:
    """Mean over rows (captions) of the standard deviation over columns (clips) of a [T, A] matrix."""
    return float(np.asarray(scores, np.float64).std(axis=1).mean()) if scores.size else float("nan")


def part_result(name: str, scores: np.ndarray, metrics: RetrievalMetrics) -> PartResult:
    """A row from a [T, A] score matrix and its `retrieval_metrics`."""
    return PartResult(name, {f"{d.upper()} {m}": float(metrics.direction(d)[m]) for d, m in PART_METRICS},
                      spread(scores))


def part_results(parts: dict[str, torch.Tensor], text_clip: np.ndarray, whole: np.ndarray,
                 whole_metrics: RetrievalMetrics) -> list[PartResult]:
    """The whole head's row (`whole`: the sum of `parts`, whose metrics the caller has) and one row per part."""
    rows = [part_result(WHOLE, whole, whole_metrics)]
    for name, scores in parts.items():
        matrix = scores.numpy()
        rows.append(part_result(name, matrix, retrieval_metrics(matrix, text_clip)))
    return rows


def format_parts(rows: list[PartResult]) -> str:
    """A plain-text table: one line per row, the metrics and the spread."""
    names = [f"{d.upper()} {m}" for d, m in PART_METRICS]
    width = max(len(r.name) for r in rows) + 2
    lines = [f"{'part':<{width}}" + "".join(f"{n:>12}" for n in names) + f"{'spread':>9}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}" + "".join(f"{r.metrics[n]:>12.1f}" for n in names) + f"{r.spread:>9.3f}")
    return "\n".join(lines)
