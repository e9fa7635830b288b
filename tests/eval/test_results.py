"""The evaluation records: their JSON is eval.json's layout."""
import json

import numpy as np
import pytest

from hade.data.types import Problem
from hade.eval.chance import chance_metrics
from hade.eval.metrics import retrieval_metrics
from hade.eval.results import EvalMetrics


def _record() -> EvalMetrics:
    clip = np.array([0, 0, 1, 2])
    scores = np.eye(3)[clip] + 0.1
    m = retrieval_metrics(scores, clip)
    return EvalMetrics(m.t2a, m.a2t, m.num_texts, m.num_audios, m.tie_rule, chance=chance_metrics(4, 3, clip),
                       split="evaluation", skipped=(Problem(source="x.wav", reason="unreadable"),))


def test_eval_metrics_json_is_eval_json_layout():
    out = json.loads(json.dumps(_record().to_dict()))
    assert list(out) == ["t2a", "a2t", "num_texts", "num_audios", "tie_rule", "chance", "split", "skipped"]
    assert out["t2a"]["R@1"] == 100.0 and out["num_texts"] == 4 and out["num_audios"] == 3
    assert out["chance"]["t2a"]["R@1"] == pytest.approx(100 / 3) and out["chance"]["tie_rule"].startswith("random")
    assert out["skipped"] == [{"source": "x.wav", "reason": "unreadable"}]


def test_multi_relevance_row_and_intervals_appear_only_when_present():
    from dataclasses import replace

    from hade.eval.stats import Intervals, StatSettings

    ci = Intervals({"t2a": {"R@1": [90.0, 100.0]}}, StatSettings(10, 0))
    rec = replace(_record(), t2a_multi={"mAP@16": 50.0}, ci=ci)
    out = rec.to_dict()
    assert out["t2a_multi"] == {"mAP@16": 50.0} and out["ci"]["t2a"] == {"R@1": [90.0, 100.0]}
    assert out["ci"]["settings"]["resamples"] == 10
    assert "t2a_multi" not in _record().to_dict() and "ci" not in _record().to_dict()


def test_direction_names_a_row_or_refuses():
    rec = _record()
    assert rec.direction("t2a") is rec.t2a and rec.direction("a2t") is rec.a2t
    with pytest.raises(ValueError, match="t2a"):
        rec.direction("t2a_multi")


def test_retrieval_metrics_read_back_from_their_json():
    from hade.eval.results import RetrievalMetrics

    record = _record()
    back = RetrievalMetrics.from_dict(json.loads(json.dumps(record.to_dict())), "eval.json: metrics")
    assert back == record.retrieval() and type(back) is RetrievalMetrics  # the keys beside it are left alone
    chance = record.chance.to_dict()
    assert chance["t2a"]["medR"] is None  # a chance level has no median rank: read back as such
    assert RetrievalMetrics.from_dict(chance, "chance") == record.chance


@pytest.mark.parametrize("change, field", [({"t2a": None}, "m.t2a"), ({"num_texts": "4"}, "m.num_texts"),
                                           ({"num_audios": True}, "m.num_audios"), ({"tie_rule": 3}, "m.tie_rule"),
                                           ({"a2t": {"R@1": "high"}}, "m.a2t")])
def test_retrieval_metrics_name_the_field_that_is_wrong(change, field):
    from hade.errors import InputError
    from hade.eval.results import RetrievalMetrics

    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        RetrievalMetrics.from_dict(_record().to_dict() | change, "m")
    with pytest.raises(InputError, match="m: expected a JSON object"):
        RetrievalMetrics.from_dict([1, 2], "m")
