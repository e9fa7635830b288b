"""`hade payoff`: the study's data, runs, archive, report and plot, on tiny sets and models."""
import json

import pytest

from _runs import fake_result

from hade.config import ModelConfig, PretrainConfig, TrainConfig
from hade.errors import InputError
from hade.eval.differences import HolmDifference, StatSettings
from hade.experiments import ablate, payoff
from hade.experiments.records import CellReport, PayoffReport, RowDifferences, RowSummary, Spread


def test_the_command_shows_the_studys_defaults():
    from hade.apps import payoff as app

    assert app.DEFAULT_CELLS == payoff.DEFAULT_CELLS and app.HEADS == payoff.HEADS


def test_cells_parse_and_bad_ones_are_named():
    cells = payoff.parse_cells("scratch:336, pretrained:clotho")
    assert [c.name for c in cells] == ["scratch-336", "pretrained-clotho"] and cells[1].size == 336
    for bad in ("warm:336", "scratch:big", "scratch:100", ""):
        with pytest.raises(InputError, match="--cells"):
            payoff.parse_cells(bad)


@pytest.fixture
def tiny(monkeypatch, tiny_model_config):
    """The study's sets at 20 clips of 1 s, 8 kHz (14 training clips each), and a tiny model."""
    monkeypatch.setattr(payoff, "DEMO", payoff.SetSpec("synthcaps", 20, 0, 1.0, 8000))
    monkeypatch.setattr(payoff, "HELDOUT", payoff.SetSpec("heldout600", 20, 11, 1.0, 8000))
    monkeypatch.setattr(payoff, "PRETRAIN_CORPUS", payoff.SetSpec("pretrain_corpus", 20, 21, 1.0, 8000))
    monkeypatch.setattr(payoff, "BASE_CLIPS", 14)
    monkeypatch.setattr(payoff, "pool_spec", lambda n: payoff.SetSpec("pool", n - 14, 31, 1.0, 8000))
    base = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, seed=0, save_every_steps=1000, max_steps=2,
                       model=ModelConfig(**tiny_model_config.__dict__))
    pre = PretrainConfig(audio_encoder="htsat-test", epochs=1, batch_size=8, clip_seconds=1.0)
    return base, pre


def _study(root, archive, base, pre):
    return payoff.Study(root, payoff.parse_cells("scratch:20,pretrained:14"), seeds=1,
                        heads=("dp", "tha+dcr"), pretrain=pre, archive=archive, progress=False,
                        log=lambda _: None, base_config=base)


@pytest.mark.timeout(900)
def test_the_study_runs_reports_plots_and_resumes_from_its_archive(tmp_path, tiny, monkeypatch):
    base, pre = tiny
    report = payoff.run_study(_study(tmp_path / "root", tmp_path / "archive", base, pre))
    assert [c.name for c in report.cells] == ["scratch-20", "pretrained-14"]
    for cell in report.cells:
        diff = cell.differences.rows["tha+dcr"]["t2a"]["R@1"]
        assert cell.seeds == 1 and diff.ci[0] <= diff.diff <= diff.ci[1] and diff.detectable > 0
        assert set(cell.study_p) == {("t2a", "R@1"), ("t2a", "mAP@10")} and cell.evaluated_on == "held-out 420 clips"
    written = json.loads((tmp_path / "root" / "payoff.json").read_text())
    assert written == report.to_dict() and "p_holm_study" in written["cells"][0]["differences"]["rows"]["tha+dcr"][
        "t2a"]["R@1"]
    # the larger set holds the base clips plus pool clips, validated and tested on the base set's splits
    train = (tmp_path / "root" / "data" / "n20" / "train.jsonl").read_text().splitlines()
    assert len(train) == 20 and json.loads(train[0])["id"].startswith("synthcaps_")
    assert len({json.loads(line)["id"] for line in train}) == 20 and json.loads(train[-1])["id"].startswith("pool/")
    pretrained = json.loads((tmp_path / "root" / "runs" / "pretrained-14" / "rows" / "dp" / "seed0" / "eval.json")
                            .read_text())
    assert pretrained["config"]["init_from"] == str(tmp_path / "root" / "pretrain")
    assert (tmp_path / "archive" / "pretrain" / "audio_encoder.safetensors").is_file()
    assert (tmp_path / "archive" / "scratch-20" / "tha_dcr" / "seed0" / ablate.PER_QUERY).is_file()
    png = payoff.plot(report, tmp_path / "payoff.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scratch-20 | tha+dcr" in (tmp_path / "root" / "payoff.md").read_text()

    # a new machine: only the archive is left; nothing is trained again and the report is the same
    monkeypatch.setattr(ablate, "train", lambda *a, **k: pytest.fail("trained a run the archive holds"))
    monkeypatch.setattr("hade.train.pretrain.pretrain", lambda *a, **k: pytest.fail("pretrained again"))
    again = payoff.run_study(_study(tmp_path / "root2", tmp_path / "archive", base, pre))
    assert again.cells[0].differences == report.cells[0].differences
    # the report alone from the archive (a fresh clone): the same report, and no data set generated for it
    fresh = payoff.report_only(_study(tmp_path / "root3", tmp_path / "archive", base, pre))
    assert fresh.to_dict() == report.to_dict() and not (tmp_path / "root3" / "data").exists()


def test_clotho_cells_report_on_their_own_held_out_set(tmp_path, tiny, monkeypatch):
    """A Clotho-like cell trains on its set and reports on a disjoint 10 s held-out set; a run finished
    before that set existed is evaluated on it (add_heldout), and until then it is not reported."""
    base, pre = tiny
    monkeypatch.setattr(payoff, "CLOTHO", payoff.SetSpec("clotholike", 20, 5, 1.0, 8000))
    monkeypatch.setattr(payoff, "CLOTHO_HELDOUT", payoff.SetSpec("clotho_heldout600", 20, 12, 1.0, 8000))
    cell = payoff.parse_cells("scratch:clotho")
    dirs = payoff.prepare_data(tmp_path / "root", cell, progress=False)
    assert payoff.heldout_dir(dirs, cell[0]) == tmp_path / "root" / "data" / "clotho_heldout420"
    held = (dirs["clotho_heldout"] / "test.jsonl").read_text().splitlines()
    assert len(held) == 14 and "clotho_heldout600" in json.loads(held[0])["audio"]
    calls = []
    monkeypatch.setattr(ablate, "add_heldout", lambda run_dir, data, log: calls.append(("add", run_dir, data)))
    monkeypatch.setattr(ablate, "run_row_seed", lambda *a, **k: calls.append(("run", a[3], a[7])) or {})
    study = payoff.Study(tmp_path / "root", cell, seeds=1, heads=("dp",), progress=False, log=lambda _: None,
                         base_config=base)
    payoff.run_one(study, dirs, cell[0], "dp", 0)
    run_dir = tmp_path / "root" / "runs" / "scratch-clotho" / "rows" / "dp" / "seed0"
    assert calls == [("add", run_dir, dirs["clotho_heldout"]), ("run", dirs["clotho"], dirs["clotho_heldout"])]
    run_dir.mkdir(parents=True)
    fake_result("dp", 0).write(run_dir / "eval.json")  # the old protocol: no held-out results
    assert payoff._finished(study, cell[0]) == {}
    fake_result("dp", 0, in_domain=True).write(run_dir / "eval.json")
    assert list(payoff._finished(study, cell[0])) == ["dp"]


def test_the_plot_says_how_many_seeds_a_cell_with_fewer_seeds_has(tmp_path, monkeypatch):
    import matplotlib.axes

    def cell(start, size, seeds, diff, clotho=False):
        row = {"t2a": {m: HolmDifference(0.0, 0.0, diff, [diff - 1.0, diff + 1.0], 0.5) for m in ("R@1", "mAP@10")}}
        return _cell_report(f"{start}-{size}", seeds, {"dp": seeds, "tha+dcr": seeds}, {"tha+dcr": row},
                            start=start, train_set="clotho" if clotho else str(size), size=size)

    report = PayoffReport([cell("scratch", 336, 3, 0.3), cell("scratch", 1000, 2, 0.7), cell("scratch", 3000, 1, 1.1),
                           cell("pretrained", 336, 3, 1.7), cell("pretrained", 336, 3, -0.2, clotho=True)], [], 4)
    notes = []
    original = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate",
                        lambda self, text, xy, *a, **k: notes.append((text, xy)) or original(self, text, xy, *a, **k))
    png = payoff.plot(report, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one note per panel for each cell with fewer seeds than the most (3), at that cell's point
    assert sorted(t for t, _ in notes) == ["1 seed", "1 seed", "2 seeds", "2 seeds"]
    assert {xy[0] for t, xy in notes if t == "2 seeds"} == {1000} and {xy[1] for t, xy in notes} == {0.7, 1.1}


def test_a_cell_pools_the_seeds_every_head_has_and_the_report_says_so(tmp_path, tiny):
    base, _ = tiny
    cell = payoff.parse_cells("scratch:20")
    study = payoff.Study(tmp_path / "root", cell, seeds=3, heads=("dp", "tha+dcr"), progress=False,
                         log=lambda _: None, base_config=base)
    for head, seeds in (("dp", 2), ("tha+dcr", 1)):
        for seed in range(seeds):
            run_dir = ablate.row_dir(study.cell_dir(cell[0]), head, seed)
            run_dir.mkdir(parents=True)
            fake_result(head, seed, in_domain=True).write(run_dir / "eval.json")
    assert {h: len(r) for h, r in payoff._finished(study, cell[0]).items()} == {"dp": 1, "tha+dcr": 1}
    assert {h: len(r) for h, r in payoff._finished_all(study, cell[0]).items()} == {"dp": 2, "tha+dcr": 1}
    report = PayoffReport([_cell_report("scratch-20", 1, {"dp": 2, "tha+dcr": 1}, {})], ["dp", "tha+dcr"], 4)
    assert "- scratch-20 pools 1 seed(s) per head, the count every head has finished (dp 2, tha+dcr 1)" in \
        payoff.markdown(report)
    report = PayoffReport([_cell_report("scratch-20", 1, {"dp": 1, "tha+dcr": 1}, {})], ["dp", "tha+dcr"], 4)
    assert "pools" not in payoff.markdown(report)


def _cell_report(name, seeds, finished, rows, start="scratch", train_set="20", size=20):
    cols = ("T2A R@1", "T2A R@5", "T2A R@10", "T2A mAP@10", "A2T R@1")
    summary = RowSummary({k: Spread(1.0, 0.0, [1.0]) for k in cols}, 1.0, 0.5)
    return CellReport(name, start, train_set, size, seeds, finished, {"dp": summary},
                      RowDifferences("dp", StatSettings(10, 0, 10), rows), "held-out")


def test_status_says_where_every_run_stands(tmp_path, tiny):
    base, _ = tiny
    cell = payoff.parse_cells("scratch:20")
    study = payoff.Study(tmp_path / "root", cell, seeds=2, heads=("dp", "tha+dcr"), progress=False,
                         log=lambda _: None, base_config=base, archive=tmp_path / "archive")
    runs = {(h, s): ablate.row_dir(study.cell_dir(cell[0]), h, s) for h in ("dp", "tha+dcr") for s in (0, 1)}
    runs["dp", 0].mkdir(parents=True)
    (runs["dp", 0] / "eval.json").write_text("{}")
    archived = tmp_path / "archive" / "scratch-20" / "dp" / "seed1"
    archived.mkdir(parents=True)
    (archived / "eval.json").write_text("{}")  # finished on another machine
    (runs["tha+dcr", 0] / "checkpoints").mkdir(parents=True)
    (runs["tha+dcr", 0] / "metrics.json").write_text(json.dumps({"history": [{"epoch_end": 0}, {"step": 9},
                                                                             {"epoch_end": 1}]}))
    assert ablate.run_state(runs["tha+dcr", 0]) == ablate.RunState("interrupted", 2)
    with ablate.run_lock(runs["tha+dcr", 0]):  # a worker on it
        rows = payoff.status(study)
        assert ablate.run_state(runs["tha+dcr", 0]) == ablate.RunState("training", 2)
    assert ablate.run_state(runs["tha+dcr", 0]).state == "interrupted"  # the lock let go: nothing held by status
    assert [(h, s, st.state) for _, h, s, st in rows] == [("dp", 0, "finished"), ("dp", 1, "finished"),
                                                         ("tha+dcr", 0, "training"), ("tha+dcr", 1, "pending")]
    text = payoff.format_status(rows, epochs=4)
    assert "scratch-20  tha+dcr  seed 0 training (2/4 epochs), seed 1 pending" in text
    assert text.splitlines()[-1] == "2 finished, 1 training, 1 pending of 4 runs"


def test_hade_payoff_status_reads_only(tmp_path, capsys):
    from hade.cli import main

    root = tmp_path / "root"
    assert main(["payoff", "--root", str(root), "--cells", "scratch:1000", "--heads", "dp,tha+dcr", "--seeds", "2",
                 "--status"]) == 0
    out = capsys.readouterr().out
    assert "scratch-1000  dp       seed 0 pending, seed 1 pending" in out and "4 pending of 4 runs" in out
    assert not root.exists()  # nothing created: no data, no claim of the folder


def test_the_larger_size_cells_compare_dp_with_tha_dcr_only(tmp_path):
    """The issue's design, so that the one documented command reproduces the study: THA alone is measured
    in the demo-size and Clotho-like cells, not as the set grows."""
    study = payoff.Study(tmp_path, payoff.parse_cells("scratch:336,scratch:1000,pretrained:clotho"))
    assert [study.heads_of(c) for c in study.cells] == [("dp", "tha", "tha+dcr"), ("dp", "tha+dcr"),
                                                         ("dp", "tha", "tha+dcr")]
    rows = payoff.status(study)
    assert [(c.name, h) for c, h, s, _ in rows if s == 0] == [
        ("scratch-336", "dp"), ("scratch-336", "tha"), ("scratch-336", "tha+dcr"), ("scratch-1000", "dp"),
        ("scratch-1000", "tha+dcr"), ("pretrained-clotho", "dp"), ("pretrained-clotho", "tha"),
        ("pretrained-clotho", "tha+dcr")]
