"""The records of `hade ablate` and `hade payoff`: a finished run (`RunResult`, its eval.json, with each
evaluated set's `SetMetrics`), a row's spread over seeds (`RowSummary` of `Spread`s), the rows' differences to
a baseline (`RowDifferences`), and the study's report (`CellReport`, `PayoffReport`). `to_dict()` is the JSON
each is written as; `RunResult.read` reads an eval.json back, naming the file and field that is wrong."""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hade.config import TrainConfig, from_dict, to_dict
from hade.errors import InputError
from hade.eval.differences import HolmDifferences, StatSettings
from hade.eval.results import MetricRow, RetrievalMetrics
from hade.train.run_state import TrainSummary
from hade.utils.atomic import write_json_atomic
from hade.utils.jsonfile import read_json

POOLING = "each query's value averaged over the seeds"
STUDY_ROW = "tha+dcr"  # `hade payoff`'s headline row (THA+DCR − DP), its p-values Holm-adjusted over every cell


@dataclass(frozen=True)
class SetMetrics:
    """One evaluated set of a run: its `retrieval` metrics, their `chance` level, and `score_seconds_per_1k2`,
    the all-pairs scoring time in seconds per 1k × 1k pairs."""

    retrieval: RetrievalMetrics
    chance: RetrievalMetrics
    score_seconds_per_1k2: float

    def direction(self, name: str) -> MetricRow:
        return self.retrieval.direction(name)

    def to_dict(self) -> dict[str, Any]:
        return self.retrieval.to_dict() | {"chance": self.chance.to_dict(),
                                           "score_seconds_per_1k2": self.score_seconds_per_1k2}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SetMetrics:
        retrieval = RetrievalMetrics.from_dict(data, where)
        seconds = data.get("score_seconds_per_1k2")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise InputError(f"{where}.score_seconds_per_1k2: expected a number, got {seconds!r:.60}")
        return cls(retrieval, RetrievalMetrics.from_dict(data.get("chance"), f"{where}.chance"), float(seconds))


@dataclass(frozen=True)
class HeldoutAdded:
    """A run evaluated on a held-out set after it finished (`ablate.add_heldout`): that set's folder and the
    checkpoint evaluated."""

    data: str
    checkpoint: str = "checkpoints/best"


@dataclass(frozen=True)
class RunResult:
    """A finished run of a table's `row` with one `seed` (its eval.json): the `config` it trained with, what
    training did (`train`), and the reported set's `metrics`; with a held-out set, `metrics` are that set's and
    `in_domain_metrics` the run's own evaluation split's. `reused_from`: the run folder of an identical
    configuration whose results these are; `heldout_added`: the held-out set was evaluated after training."""

    row: str
    seed: int
    config: TrainConfig
    train: TrainSummary
    metrics: SetMetrics
    in_domain_metrics: SetMetrics | None = None
    reused_from: str | None = None
    heldout_added: HeldoutAdded | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"row": self.row, "seed": self.seed, "config": to_dict(self.config), "train": self.train.to_dict(),
               "metrics": self.metrics.to_dict()}
        if self.in_domain_metrics is not None:
            out["in_domain_metrics"] = self.in_domain_metrics.to_dict()
        if self.reused_from is not None:
            out["reused_from"] = self.reused_from
        if self.heldout_added is not None:
            out["heldout_added"] = dataclasses.asdict(self.heldout_added)
        return out

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunResult:
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object (a finished run), got {type(data).__name__}")
        missing = [k for k in ("row", "seed", "config", "train", "metrics") if k not in data]
        if missing:
            raise InputError(f"{where}: no {missing} (a finished run of `hade ablate` or `hade payoff` has them)")
        if not isinstance(data["row"], str) or not isinstance(data["seed"], int):
            raise InputError(f"{where}: expected row a string and seed an integer, got {data['row']!r}, "
                             f"{data['seed']!r}")
        train = _record(TrainSummary, data["train"], f"{where}: train")
        heldout = data.get("heldout_added")
        heldout = None if heldout is None else _record(HeldoutAdded, heldout, f"{where}: heldout_added")
        in_domain = data.get("in_domain_metrics")
        return cls(data["row"], data["seed"], from_dict(TrainConfig, data["config"], f"{where}: config"), train,
                   SetMetrics.from_dict(data["metrics"], f"{where}: metrics"),
                   None if in_domain is None else SetMetrics.from_dict(in_domain, f"{where}: in_domain_metrics"),
                   data.get("reused_from"), heldout)

    @classmethod
    def read(cls, path: Path) -> RunResult:
        return cls.from_dict(read_json(path, "run result"), str(path))


def _record(cls: type, data: Any, where: str) -> Any:
    """`from_dict` for a record whose fields have no defaults: a missing one is named, not a TypeError."""
    if isinstance(data, dict):
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InputError(f"{where}: missing field(s) {missing}")
    return from_dict(cls, data, where)


@dataclass(frozen=True)
class Spread:
    """One metric over seeds: its `values` in seed order, their `mean` and sample `std` (0 for one seed)."""

    mean: float
    std: float
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, list(values))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": self.values}


@dataclass(frozen=True)
class RowSummary:
    """A row over its seeds: `columns` (a table column's name, e.g. "T2A R@1" -> its `Spread`), the mean
    training seconds and the mean all-pairs scoring time (seconds per 1k × 1k pairs)."""

    columns: dict[str, Spread]
    train_seconds: float
    score_seconds_per_1k2: float

    def to_dict(self) -> dict[str, Any]:
        return ({name: s.to_dict() for name, s in self.columns.items()}
                | {"train seconds": self.train_seconds, "score s per 1k×1k": self.score_seconds_per_1k2})


@dataclass(frozen=True)
class RowDifferences:
    """Each row against the `baseline` row, seeds pooled per query: `rows` (row -> direction -> metric ->
    HolmDifference, Holm over the rows; None where a row has no per-query results) and the `settings` of the
    intervals and tests."""

    baseline: str
    settings: StatSettings
    rows: dict[str, HolmDifferences | None]

    def to_dict(self) -> dict[str, Any]:
        rows = {name: None if res is None else {d: {m: r.to_dict() for m, r in by.items()} for d, by in res.items()}
                for name, res in self.rows.items()}
        return {"baseline": self.baseline, "pooling": POOLING, "settings": self.settings.to_dict(), "rows": rows}


@dataclass(frozen=True)
class CellReport:
    """One cell of `hade payoff` (a start and a training set; `name` as "scratch-1000", `size` in clips): the
    `seeds` every head pools, the seeds each head has finished, each head's `summary` and `differences` to DP,
    the set it was `evaluated_on`, and `study_p`: the STUDY_ROW's (THA+DCR − DP) headline p-values
    Holm-adjusted over every cell of the report ((direction, metric) -> p)."""

    name: str
    start: str
    train_set: str
    size: int
    seeds: int
    finished_seeds: dict[str, int]
    summary: dict[str, RowSummary]
    differences: RowDifferences
    evaluated_on: str
    study_p: dict[tuple[str, str], float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        diffs = self.differences.to_dict()
        for (d, m), p in self.study_p.items():
            diffs["rows"][STUDY_ROW][d][m]["p_holm_study"] = p
        return {"cell": self.name, "start": self.start, "train_set": self.train_set, "size": self.size,
                "seeds": self.seeds, "finished_seeds": dict(self.finished_seeds),
                "summary": {h: s.to_dict() for h, s in self.summary.items()}, "differences": diffs,
                "evaluated_on": self.evaluated_on}


@dataclass(frozen=True)
class PayoffReport:
    """`hade payoff`'s report (payoff.json): its `cells`, the `heads` run and the `epochs` budget."""

    cells: list[CellReport]
    heads: list[str]
    epochs: int
    power: str = "smallest difference detected with 80 % power at two-sided 5 %: 2.80 x bootstrap SE"

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [c.to_dict() for c in self.cells], "heads": list(self.heads), "epochs": self.epochs,
                "power": self.power}
