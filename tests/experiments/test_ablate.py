"""Ablation tables: rows per table, resumable by row and seed, markdown beside the paper."""
import json
import shutil

import pytest

from hade.config import ModelConfig, TrainConfig
from hade.data.synthcaps import generate
from hade.errors import InputError
from hade.experiments.ablate import ablate, table_rows
from hade.utils.atomic import write_json_atomic


def test_rows_of_each_table():
    assert [r.name for r in table_rows("1")] == ["dp", "tha", "tha+dp", "dcr", "tha+dcr"]
    assert [r.name for r in table_rows("3")] == ["dp", "dp+ld", "dp+ld+la", "dp+ld+la+ca"]
    cfg = TrainConfig(model=ModelConfig(embed_dim=256))
    table_rows("4")[0].apply(cfg)  # K=6
    assert cfg.model.head_options["factors"] == 6 and cfg.model.embed_dim == 252
    cfg = TrainConfig()
    table_rows("5")[5].apply(cfg)
    assert cfg.model.head == "dcr" and cfg.model.head_options == {"beta": 0.01}
    with pytest.raises(InputError):
        table_rows("9")


@pytest.mark.timeout(900)  # four tiny trainings: about 30 s on idle cores, minutes under a loaded machine
def test_table3_runs_resumes_and_writes_markdown(tmp_path, tiny_model_config, monkeypatch):
    """One seed (several seeds, their spread and the waiting for other workers are tested on stubbed runs
    below): every row trains, the table is cached, and a twin row is reused instead of trained."""
    data = tmp_path / "data"
    generate(data, clips=24, seed=0, sample_rate=8000, duration=1.0, progress=False)
    base = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0,
                       model=ModelConfig(**{**tiny_model_config.__dict__, "head_options": {"factors": 4}}))
    # DP has no factor options: the row builders must only pass them to factor heads
    base.model.head_options = {}
    summary = ablate("3", data, tmp_path / "out", seeds=1, base=base, progress=False, log=lambda s: None)
    assert list(summary) == ["dp", "dp+ld", "dp+ld+la", "dp+ld+la+ca"]
    assert len(summary["dp"].columns["T2A R@1"].values) == 1
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "| dp+ld+la+ca |" in md and "40.6" in md  # the paper's number beside ours
    data_json = json.loads((tmp_path / "out" / "table3.json").read_text())
    assert data_json["runs"]["dp+ld"][0]["config"]["model"]["head"] == "dp+ld"

    # a second call trains nothing: every (row, seed) is cached
    import hade.experiments.ablate as mod

    monkeypatch.setattr(mod, "train", lambda *a, **k: pytest.fail("retrained a finished row"))
    again = ablate("3", data, tmp_path / "out", seeds=1, base=base, progress=False, log=lambda s: None)
    assert again["dp"].columns["T2A R@1"] == summary["dp"].columns["T2A R@1"]

    # Table 1's `dcr` is Table 3's `dp+ld+la+ca` under another name: reused, not trained again
    logs = []
    table1 = ablate("1", data, tmp_path / "out", seeds=1, base=base, progress=False, log=logs.append, rows=["dcr"])
    assert table1["dcr"].columns["T2A R@1"] == summary["dp+ld+la+ca"].columns["T2A R@1"]
    assert sum("reusing its run" in line for line in logs) == 1
    reused = json.loads((tmp_path / "out" / "rows" / "dcr" / "seed0" / "eval.json").read_text())
    assert reused["row"] == "dcr" and reused["reused_from"].endswith("dp_ld_la_ca/seed0")
    assert (tmp_path / "out" / "rows" / "dcr" / "seed0" / "per_query.npz").is_file()
    # a different configuration is not a twin
    monkeypatch.setattr(mod, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("trains")))
    with pytest.raises(RuntimeError, match="trains"):
        ablate("1", data, tmp_path / "out", seeds=1, base=base, progress=False, log=lambda s: None, rows=["tha"])


def test_compare_rows_cover_every_system():
    rows = {r.name: r for r in table_rows("compare")}
    assert list(rows) == ["dp", "tha+dcr", "coatt-single", "coatt-stacked", "coatt-iterated", "hci", "hci+ac",
                          "diffatr"]
    cfg = TrainConfig()
    rows["hci+ac"].apply(cfg)
    assert cfg.model.head == "hci+ac" and cfg.aux_captions == "synthcaps"


def test_ood_table_evaluates_on_the_held_out_set(tmp_path, tiny_model_config):
    from hade.data.synthcaps import EVENT_TYPES

    names = sorted(EVENT_TYPES)
    generate(tmp_path / "in", clips=24, seed=0, sample_rate=8000, duration=1.0, event_types=names[:16], progress=False)
    generate(tmp_path / "ood", clips=24, seed=1, sample_rate=8000, duration=1.0, event_types=names[16:],
             progress=False)
    base = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, model=ModelConfig(**tiny_model_config.__dict__))
    with pytest.raises(InputError, match="--ood-data"):
        ablate("ood", tmp_path / "in", tmp_path / "out", seeds=1, base=base, progress=False, log=lambda s: None)
    summary = ablate("ood", tmp_path / "in", tmp_path / "out", seeds=1, base=base, progress=False,
                     log=lambda s: None, ood_data=tmp_path / "ood", rows=["dp"])  # the protocol, not the heads
    assert list(summary) == ["dp"]
    run = json.loads((tmp_path / "out" / "table" "ood.json").read_text())["runs"]["dp"][0]
    assert run["metrics"]["num_audios"] == 4 and "in_domain_metrics" in run
    assert run["metrics"]["score_seconds_per_1k2"] > 0
    md = (tmp_path / "out" / "tableood.md").read_text()
    assert "Out of domain" in md and "| dp |" in md


def test_a_run_finished_without_the_held_out_set_is_evaluated_on_it_later(tmp_path, tiny_model_config):
    """add_heldout: the late run reports what a run trained with the held-out set reports, keeps its own
    set's metrics, and is evaluated once."""
    from hade.eval.per_query import load_per_query
    from hade.experiments.ablate import PER_QUERY, add_heldout, head_row, run_row_seed

    generate(tmp_path / "in", clips=24, seed=0, sample_rate=8000, duration=1.0, progress=False)
    generate(tmp_path / "ood", clips=24, seed=1, sample_rate=8000, duration=1.0, progress=False)
    base = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, model=ModelConfig(**tiny_model_config.__dict__))
    row, quiet = head_row("dp"), (lambda s: None)
    late = run_row_seed(row, 0, base, tmp_path / "in", tmp_path / "late", False, quiet)
    run_dir = tmp_path / "late" / "rows" / "dp" / "seed0"
    own = load_per_query(run_dir / PER_QUERY)
    assert add_heldout(run_dir, tmp_path / "ood", quiet)
    upgraded = json.loads((run_dir / "eval.json").read_text())
    with_it = run_row_seed(row, 0, base, tmp_path / "in", tmp_path / "with", False, quiet, tmp_path / "ood")
    assert upgraded["in_domain_metrics"] == late.metrics.to_dict()
    assert upgraded["heldout_added"]["data"] == str(tmp_path / "ood")
    for side in ("t2a", "a2t"):  # training is deterministic: the same model, the same held-out metrics
        assert upgraded["metrics"][side] == with_it.metrics.direction(side)
    pq = load_per_query(run_dir / PER_QUERY)
    reference = load_per_query(tmp_path / "with" / "rows" / "dp" / "seed0" / PER_QUERY)
    assert pq.captions_sha256 == reference.captions_sha256 != own.captions_sha256  # the held-out captions
    assert (pq.t2a_rank == reference.t2a_rank).all()
    assert not add_heldout(run_dir, tmp_path / "ood", lambda s: pytest.fail("evaluated twice"))
    # an interrupted one (eval.json written, per-query results not yet moved) is finished, not redone
    (run_dir / PER_QUERY).rename(run_dir / "per_query.heldout.npz")
    assert not add_heldout(run_dir, tmp_path / "ood", lambda s: pytest.fail("evaluated twice"))
    assert (run_dir / PER_QUERY).is_file() and not (run_dir / "per_query.heldout.npz").exists()
    shutil.rmtree(tmp_path / "with" / "rows" / "dp" / "seed0" / "checkpoints")
    gone = json.loads((tmp_path / "with" / "rows" / "dp" / "seed0" / "eval.json").read_text())
    del gone["in_domain_metrics"]
    write_json_atomic(tmp_path / "with" / "rows" / "dp" / "seed0" / "eval.json", gone)
    with pytest.raises(InputError, match="cannot be evaluated on it now"):
        add_heldout(tmp_path / "with" / "rows" / "dp" / "seed0", tmp_path / "ood", quiet)


def _fake_runs(monkeypatch):
    """Replace training + evaluation by a stub that records (row, seed) and writes a plausible eval.json."""
    from _runs import fake_result

    import hade.experiments.ablate as mod

    calls = []

    def fake(row, seed, base, data_dir, run_dir, progress, log, ood_data):
        calls.append((row.name, seed))
        result = fake_result(row.name, seed, {"R@1": 10.0 + seed, "R@5": 50.0, "R@10": 70.0, "mAP@10": 30.0})
        result.write(run_dir / "eval.json")
        return result

    monkeypatch.setattr(mod, "_train_and_evaluate", fake)
    return calls


def test_rows_subset_runs_only_those_and_reports_finished_others(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch)
    summary = ablate("3", tmp_path, tmp_path / "out", seeds=2, progress=False, log=lambda s: None, rows=["dp+ld"])
    assert calls == [("dp+ld", 0), ("dp+ld", 1)] and list(summary) == ["dp+ld"]
    summary = ablate("3", tmp_path, tmp_path / "out", seeds=2, progress=False, log=lambda s: None, rows=["dp"])
    assert calls[2:] == [("dp", 0), ("dp", 1)]
    assert list(summary) == ["dp", "dp+ld"]  # the table's order; dp+ld came from the finished runs
    assert "| dp+ld |" in (tmp_path / "out" / "table3.md").read_text()
    # a row with a seed missing is left out rather than reported on fewer seeds
    (tmp_path / "out" / "rows" / "dp_ld" / "seed1" / "eval.json").unlink()
    summary = ablate("3", tmp_path, tmp_path / "out", seeds=2, progress=False, log=lambda s: None, rows=["dp"])
    assert list(summary) == ["dp"] and len(calls) == 4
    with pytest.raises(InputError, match="not in table 3"):
        ablate("3", tmp_path, tmp_path / "out", seeds=2, progress=False, log=lambda s: None, rows=["tha"])


def test_a_run_being_trained_elsewhere_is_refused(tmp_path, monkeypatch):
    from hade.experiments.ablate import run_lock, run_row_seed

    calls = _fake_runs(monkeypatch)
    row = table_rows("1")[0]
    with run_lock(tmp_path / "rows" / "dp" / "seed0"):
        with pytest.raises(InputError, match="another worker is training"):
            run_row_seed(row, 0, TrainConfig(), tmp_path, tmp_path, False, lambda s: None)
    assert calls == []
    run_row_seed(row, 0, TrainConfig(), tmp_path, tmp_path, False, lambda s: None)  # released: it runs
    assert calls == [("dp", 0)]


def test_a_worker_does_its_other_runs_first_then_waits_for_a_busy_one(tmp_path, monkeypatch):
    import threading

    from _runs import fake_result

    from hade.experiments.ablate import row_dir, run_lock

    calls = _fake_runs(monkeypatch)
    row = table_rows("3")[0]
    held, logs = threading.Event(), []
    other_result = fake_result("dp", 0, {"R@1": 99.0, "R@5": 99.0, "R@10": 99.0, "mAP@10": 99.0})

    def other_worker():  # trains dp seed 0 until this worker has run seed 1 and started waiting
        with run_lock(row_dir(tmp_path / "out", row, 0)):
            held.set()
            deadline = threading.Event()
            while not any("waiting for the other worker" in line for line in logs) and not deadline.wait(0.05):
                pass
            other_result.write(row_dir(tmp_path / "out", row, 0) / "eval.json")

    thread = threading.Thread(target=other_worker)
    thread.start()
    held.wait(10)
    summary = ablate("3", tmp_path, tmp_path / "out", seeds=2, progress=False, log=logs.append, rows=["dp"])
    thread.join(10)
    assert calls == [("dp", 1)]  # seed 0 was the other worker's: taken from its eval.json, not retrained
    assert any("training this run" in line and "other runs first" in line for line in logs)
    assert summary["dp"].columns["T2A R@1"].mean == pytest.approx((99.0 + 11.0) / 2)


def test_twin_configs_ignore_loader_fields_and_head_aliases():
    from hade.config import from_dict, to_dict
    from hade.experiments.ablate import _same_run

    old = to_dict(TrainConfig(model=ModelConfig(head="dp+ld+la+ca")))
    for name in ("num_workers", "prefetch_factor", "audio_cache_mb"):  # a run from before these fields
        old.pop(name, None)
    new = TrainConfig(model=ModelConfig(head="dcr"), num_workers=2)
    assert _same_run(from_dict(TrainConfig, old)) == _same_run(new)
    assert _same_run(TrainConfig(model=ModelConfig(head="dcr"), lr=1e-3)) != _same_run(new)


def test_a_twin_is_a_finished_run_of_the_same_config_and_a_damaged_one_is_passed_over(tmp_path):
    from _runs import fake_result

    from hade.experiments.ablate import PER_QUERY, _reuse_twin, head_row, row_dir

    cfg = TrainConfig(model=ModelConfig(head="dcr"))
    twin, damaged, mine = (row_dir(tmp_path, name, 0) for name in ("dp+ld+la+ca", "broken", "dcr"))
    for folder in (twin, damaged, mine):
        folder.mkdir(parents=True)
    (damaged / "eval.json").write_text("{")
    logs = []
    assert _reuse_twin(cfg, head_row("dcr"), 0, mine, None, logs.append) is None  # only the damaged one there
    assert any(f"{damaged / 'eval.json'}: invalid JSON" in line and "not compared as a twin" in line for line in logs)
    fake_result("dp+ld+la+ca", 0, config=TrainConfig(model=ModelConfig(head="dp+ld+la+ca"))).write(twin / "eval.json")
    (twin / PER_QUERY).write_bytes(b"ranks")
    reused = _reuse_twin(cfg, head_row("dcr"), 0, mine, None, logs.append)
    assert reused.row == "dcr" and reused.reused_from == str(twin) and reused.config == cfg
    assert (mine / PER_QUERY).read_bytes() == b"ranks" and json.loads((mine / "eval.json").read_text())["row"] == "dcr"
    assert _reuse_twin(cfg, head_row("dcr"), 0, mine, tmp_path / "held-out", logs.append) is None  # other protocol
