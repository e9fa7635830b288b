"""Ablation tables: every row's difference to the baseline, seeds pooled per query, old runs handled."""
import json

import numpy as np
import pytest
from _runs import fake_result, set_metrics

import hade.experiments.ablate as mod
from hade.eval.metrics import retrieval_metrics
from hade.eval.per_query import load_per_query, per_query_results, save_per_query
from hade.experiments.ablate import ablate
from hade.experiments.records import SetMetrics

CLIPS = 40
GAIN = {"dp": 0.0, "dp+ld": 0.2, "dp+ld+la": 0.4, "dp+ld+la+ca": 2.0, "K=6": 0.0, "K=8": 0.5, "K=10": 1.0}


def _per_query(row: str, seed: int):
    """A synthetic evaluation: shared clip difficulty, noise per (row, seed); better rows score their clip higher."""
    text_clip = np.repeat(np.arange(CLIPS), 5)
    mu = np.random.default_rng(99).normal(1.0, 1.0, CLIPS)[text_clip] + GAIN[row]
    rng = np.random.default_rng([seed, sorted(GAIN).index(row)])
    scores = rng.normal(size=(text_clip.size, CLIPS))
    scores[np.arange(text_clip.size), text_clip] += mu
    return scores, text_clip, per_query_results(scores, text_clip, [f"c{a}" for a in range(CLIPS)])


def _fake(monkeypatch, with_per_query=True):
    calls = []

    def fake(row, seed, base, data_dir, run_dir, progress, log, ood_data):
        calls.append((row.name, seed))
        scores, text_clip, pq = _per_query(row.name, seed)
        metrics = retrieval_metrics(scores, text_clip)
        result = fake_result(row.name, seed, metrics=SetMetrics(metrics, metrics, 0.5))
        if with_per_query:
            save_per_query(run_dir / "per_query.npz", pq)
        result.write(run_dir / "eval.json")
        return result

    monkeypatch.setattr(mod, "_train_and_evaluate", fake)
    return calls


def _run(tmp_path, table="3", seeds=2):
    return ablate(table, tmp_path, tmp_path / "out", seeds=seeds, progress=False, log=lambda s: None)


def test_rows_get_their_difference_to_dp_with_interval_and_holm_p(tmp_path, monkeypatch):
    _fake(monkeypatch)
    summary = _run(tmp_path)
    table = json.loads((tmp_path / "out" / "table3.json").read_text())
    diffs = table["differences"]
    assert diffs["baseline"] == "dp" and list(diffs["rows"]) == ["dp+ld", "dp+ld+la", "dp+ld+la+ca"]
    assert "averaged over the seeds" in diffs["pooling"] and diffs["settings"]["seed"] == 0
    for row, res in diffs["rows"].items():
        for d, col in (("t2a", "T2A R@1"), ("a2t", "A2T R@1")):
            r = res[d]["R@1"]
            # pooling per query then averaging = the difference of the seed means
            assert r["diff"] == pytest.approx(summary[row].columns[col].mean - summary["dp"].columns[col].mean,
                                              abs=1e-9)
            assert r["ci"][0] <= r["diff"] <= r["ci"][1] and r["p"] <= r["p_holm"] <= 1
    best = diffs["rows"]["dp+ld+la+ca"]["t2a"]["R@1"]
    assert best["diff"] > 0 and best["ci"][0] > 0 and best["p_holm"] < 0.01  # better by construction
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "## Difference to dp" in md and "Holm" in md
    line = next(s for s in md.splitlines() if s.startswith("| dp+ld+la+ca | +"))
    assert f"{best['diff']:+.1f} [{best['ci'][0]:+.1f}, {best['ci'][1]:+.1f}] p=" in line
    det = (1.959964 + 0.841621) * (best["ci"][1] - best["ci"][0]) / 3.919928  # 80 % power, two-sided 5 %
    assert line.split(" | ")[1].endswith(f", det. {det:.1f}") and "80 % power" in md


def test_table4_compares_with_its_chosen_k(tmp_path, monkeypatch):
    _fake(monkeypatch)
    _run(tmp_path, table="4", seeds=1)
    diffs = json.loads((tmp_path / "out" / "table4.json").read_text())["differences"]
    assert diffs["baseline"] == "K=8" and list(diffs["rows"]) == ["K=6", "K=10"]


def test_an_old_run_without_per_query_results_or_checkpoint_is_na(tmp_path, monkeypatch):
    _fake(monkeypatch)
    _run(tmp_path)
    (tmp_path / "out" / "rows" / "dp_ld" / "seed1" / "per_query.npz").unlink()
    _run(tmp_path)  # everything cached: only the table is rewritten
    diffs = json.loads((tmp_path / "out" / "table3.json").read_text())["differences"]
    assert diffs["rows"]["dp+ld"] is None and diffs["rows"]["dp+ld+la"] is not None
    md = (tmp_path / "out" / "table3.md").read_text()
    assert next(s for s in md.splitlines() if s.startswith("| dp+ld | n/a")).count("n/a") == 8
    (tmp_path / "out" / "rows" / "dp" / "seed0" / "per_query.npz").unlink()
    _run(tmp_path)  # no baseline results: every row n/a
    diffs = json.loads((tmp_path / "out" / "table3.json").read_text())["differences"]
    assert all(v is None for v in diffs["rows"].values())


def test_an_old_run_with_a_checkpoint_is_re_evaluated_once(tmp_path, monkeypatch):
    calls = _fake(monkeypatch, with_per_query=False)
    for seed in (0, 1):  # old runs: eval.json and a checkpoint, no per-query file
        for row in ("dp", "dp_ld", "dp_ld_la", "dp_ld_la_ca"):
            (tmp_path / "out" / "rows" / row / f"seed{seed}" / "checkpoints" / "best").mkdir(parents=True)
    evaluated = []
    monkeypatch.setattr(mod, "load", lambda path: str(path))

    def evaluate_sets(model, cfg, data_dir, ood_data):
        row, seed = model.split("/rows/")[1].split("/")[:2]
        name = {"dp": "dp", "dp_ld": "dp+ld", "dp_ld_la": "dp+ld+la", "dp_ld_la_ca": "dp+ld+la+ca"}[row]
        evaluated.append((name, int(seed[4:])))
        return mod.Evaluated(set_metrics(), _per_query(name, int(seed[4:]))[2])

    monkeypatch.setattr(mod, "_evaluate_sets", evaluate_sets)
    _run(tmp_path)
    assert len(calls) == 8 and sorted(set(evaluated)) == sorted(calls)
    assert (tmp_path / "out" / "rows" / "dp" / "seed1" / "per_query.npz").is_file()
    pq = load_per_query(tmp_path / "out" / "rows" / "dp" / "seed1" / "per_query.npz")
    assert np.array_equal(pq.t2a_rank, _per_query("dp", 1)[2].t2a_rank)
    n = len(evaluated)
    _run(tmp_path)
    assert len(evaluated) == n  # saved: not re-evaluated again
    diffs = json.loads((tmp_path / "out" / "table3.json").read_text())["differences"]
    assert diffs["rows"]["dp+ld+la+ca"]["t2a"]["R@1"]["diff"] > 0


def test_hade_ablate_status_lists_each_rows_seeds(tmp_path, capsys):
    from hade.cli import main

    out = tmp_path / "out"
    run_dir = mod.row_dir(out, "tha", 1)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"history": [{"epoch_end": 0}]}))
    (mod.row_dir(out, "dp", 0)).mkdir(parents=True)
    (mod.row_dir(out, "dp", 0) / "eval.json").write_text("{}")
    assert main(["ablate", "--table", "1", "--data", str(tmp_path / "none"), "--out", str(out), "--seeds", "2",
                 "--epochs", "4", "--rows", "dp,tha", "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["dp   seed 0 finished, seed 1 pending",
                     "tha  seed 0 pending, seed 1 interrupted (1/4 epochs)",
                     "1 finished, 2 pending, 1 interrupted of 4 runs"]
