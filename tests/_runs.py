"""Finished runs for the experiments tests: `fake_result` builds the RunResult (eval.json) a training run of
`hade ablate` / `hade payoff` leaves, with the metrics given. Importable as ``from _runs import fake_result``."""
from __future__ import annotations

from hade.config import TrainConfig
from hade.eval.results import RetrievalMetrics
from hade.experiments.records import RunResult, SetMetrics
from hade.train.run_state import TrainSummary

SIDE = {"R@1": 10.0, "R@5": 50.0, "R@10": 70.0, "mAP@10": 30.0}


def set_metrics(t2a: dict[str, float] | None = None, a2t: dict[str, float] | None = None,
                num_texts: int = 20, num_audios: int = 4, seconds: float = 0.5) -> SetMetrics:
    t2a, a2t = dict(t2a or SIDE), dict(a2t or t2a or SIDE)
    chance = RetrievalMetrics({k: 1.0 for k in t2a}, {k: 1.0 for k in a2t}, num_texts, num_audios, "expected")
    return SetMetrics(RetrievalMetrics(t2a, a2t, num_texts, num_audios, "optimistic"), chance, seconds)


def fake_result(row: str, seed: int, t2a: dict[str, float] | None = None, a2t: dict[str, float] | None = None,
                in_domain: bool = False, config: TrainConfig | None = None, metrics: SetMetrics | None = None,
                train_seconds: float = 1.0) -> RunResult:
    train = TrainSummary(global_step=2, epochs_done=1, best_epoch=0, best_step=2, best_score=1.0,
                         stopped_early=False, seconds=train_seconds, seconds_this_run=train_seconds, out_dir="run",
                         decode_failures=0)
    metrics = metrics or set_metrics(t2a, a2t)
    return RunResult(row, seed, config or TrainConfig(), train, metrics, metrics if in_domain else None)
