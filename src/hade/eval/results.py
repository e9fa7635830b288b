"""What an evaluation measured, as typed records: `RetrievalMetrics` (both directions of one score matrix,
or their chance level) and `EvalMetrics` (one evaluated split: metrics, chance level, skipped items, and,
when asked for, the multi-relevance row and bootstrap intervals). `to_dict()` is the JSON of eval.json.

A direction's metrics stay a mapping from the metric's name to its value (``{"R@1": 17.8, "mAP@10": ...,
"medR": 5, "num_queries": 420}``): which metrics a row holds depends on the ks and the mAP cut-off asked for,
so the names are data, as the columns of a table are."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hade.data.types import Problem
from hade.errors import InputError
from hade.eval.differences import Intervals

MetricRow = dict[str, float]  # metric name -> value (percentages, ranks, counts)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Both directions of a [num_texts, num_audios] score matrix: `t2a` (each caption queries the clips) and
    `a2t` (each clip queries the captions) rows (see hade.eval.metrics for the definitions), and the rule
    that broke ties (for a chance level: the random ranking it is the expectation of)."""

    t2a: MetricRow
    a2t: MetricRow
    num_texts: int
    num_audios: int
    tie_rule: str

    def direction(self, name: str) -> MetricRow:
        """The row of direction `name` ("t2a" or "a2t"), for callers that iterate over directions."""
        if name not in ("t2a", "a2t"):
            raise ValueError(f"direction: expected 't2a' or 'a2t', got {name!r}")
        return self.t2a if name == "t2a" else self.a2t

    def to_dict(self) -> dict[str, Any]:
        return {"t2a": dict(self.t2a), "a2t": dict(self.a2t), "num_texts": self.num_texts,
                "num_audios": self.num_audios, "tie_rule": self.tie_rule}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RetrievalMetrics":
        """The record `to_dict` wrote (other keys beside it, as eval.json's chance and ci, are left alone);
        InputError naming `where` and the field when one is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object of retrieval metrics, got {type(data).__name__}")
        for name, kind in (("t2a", dict), ("a2t", dict), ("num_texts", int), ("num_audios", int), ("tie_rule", str)):
            if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
                raise InputError(f"{where}.{name}: expected {kind.__name__}, got {data.get(name)!r:.60}")
        for direction in ("t2a", "a2t"):
            bad = {k: v for k, v in data[direction].items()
                   if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool))}
            if bad:  # None: a metric a chance level has not (its medR)
                raise InputError(f"{where}.{direction}: expected metric name -> number, got {bad!r:.80}")
        return cls(dict(data["t2a"]), dict(data["a2t"]), data["num_texts"], data["num_audios"], data["tie_rule"])

    def retrieval(self) -> "RetrievalMetrics":
        """These metrics alone (an EvalMetrics without its split, chance level and the rest)."""
        return RetrievalMetrics(dict(self.t2a), dict(self.a2t), self.num_texts, self.num_audios, self.tie_rule)


@dataclass(frozen=True)
class EvalMetrics(RetrievalMetrics):
    """One evaluated split (`split`, its name): its retrieval metrics, their `chance` level, the items
    `skipped` (unreadable audio and the like), and, when asked for, `t2a_multi` (T2A with several relevant
    files per query, hade.eval.relevance) and `ci` (bootstrap intervals, hade.eval.stats.bootstrap_cis)."""

    chance: RetrievalMetrics
    split: str
    skipped: tuple[Problem, ...] = ()
    t2a_multi: MetricRow | None = None
    ci: Intervals | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out |= {"chance": self.chance.to_dict(), "split": self.split,
                "skipped": [{"source": p.source, "reason": p.reason} for p in self.skipped]}
        if self.t2a_multi is not None:
            out["t2a_multi"] = dict(self.t2a_multi)
        if self.ci is not None:
            out["ci"] = self.ci.to_dict()
        return out
