"""The experiments' records: a finished run's eval.json read back field for field, bad ones named."""
import json
from pathlib import Path

import pytest
from _runs import fake_result

from hade.config import TrainConfig, from_dict, to_dict
from hade.errors import InputError
from hade.experiments.records import RunResult, Spread

ARCHIVE = Path(__file__).resolve().parents[2] / "docs" / "payoff"


def test_every_archived_run_reads_back_to_the_same_json():
    """The study's archived eval.json files (written before the record existed) are what the record writes;
    a config only gains the fields added since, at their defaults."""
    files = sorted(ARCHIVE.glob("*/*/seed*/eval.json"))
    assert len(files) >= 40
    for path in files:
        result = RunResult.read(path)
        written, original = json.loads(json.dumps(result.to_dict())), json.loads(path.read_text())
        assert written | {"config": None} == original | {"config": None}, path
        assert written["config"] == to_dict(from_dict(TrainConfig, original["config"])), path
        assert result.in_domain_metrics is not None and result.metrics.retrieval.num_audios == 420


def test_a_run_round_trips_and_writes_atomically(tmp_path):
    result = fake_result("dp", 1, in_domain=True)
    result.write(tmp_path / "eval.json")
    assert RunResult.read(tmp_path / "eval.json") == result and [p.name for p in tmp_path.iterdir()] == ["eval.json"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("metrics"), r"no \['metrics'\]"),
    (lambda d: d.update(seed="0"), "seed an integer"),
    (lambda d: d["metrics"].pop("score_seconds_per_1k2"), r"metrics\.score_seconds_per_1k2: expected a number"),
    (lambda d: d["metrics"]["chance"].pop("tie_rule"), r"metrics\.chance\.tie_rule"),
    (lambda d: d["train"].pop("seconds"), r"train: missing field\(s\) \[.seconds.\]"),
    (lambda d: d["config"].update(epochz=3), r"config: unknown field\(s\) \['epochz'\]"),
    (lambda d: d.update(in_domain_metrics=[]), "in_domain_metrics: expected a JSON object"),
])
def test_a_bad_eval_json_is_named_with_its_field(tmp_path, edit, message):
    data = fake_result("dp", 0, in_domain=True).to_dict()
    edit(data)
    (tmp_path / "eval.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"{tmp_path / 'eval.json'}.*{message}"):
        RunResult.read(tmp_path / "eval.json")
    (tmp_path / "eval.json").write_text("{")
    with pytest.raises(InputError, match="invalid JSON at line 1"):
        RunResult.read(tmp_path / "eval.json")


def test_a_spread_is_mean_and_sample_std_over_seeds():
    assert Spread.of([1.0, 3.0]) == Spread(2.0, 2 ** 0.5, [1.0, 3.0])
    assert Spread.of([5.0]).std == 0.0
