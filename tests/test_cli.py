"""The command line end to end on tiny settings, and its error handling."""
import json

from hade.cli import main
from hade.config import TrainConfig, to_dict


def test_synth_train_eval_from_the_command_line(tmp_path, tiny_model_config, capsys, monkeypatch):
    data = tmp_path / "data"
    assert main(["synth", str(data), "--clips", "24", "--sample-rate", "8000", "--duration", "1.0"]) == 0
    assert (data / "clotho_captions_evaluation.csv").is_file()
    cfg = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, model=tiny_model_config)
    (tmp_path / "cfg.json").write_text(json.dumps(to_dict(cfg)))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(tmp_path / "cfg.json"),
                 "--head", "dp", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "T2A" in table and "A2T" in table and "chance" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["t2a"]) >= {"R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"}
    assert metrics["num_audios"] == 4 and metrics["num_texts"] == 20
    # the checkpoint records the training clip length, and eval defaults to it (the encoder stretches
    # whatever it gets to one image, so another length would shift every input)
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["clip_seconds"] == 1.0
    import hade
    import hade.eval.evaluate as evaluate_mod

    assert hade.load(run / "checkpoints" / "best").clip_samples == 8000  # 1 s at 8 kHz; the encoder holds 2.05 s
    seen = []
    real = evaluate_mod.evaluate
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda m, split, seconds, *a, **k: seen.append(seconds)
                        or real(m, split, seconds, *a, **k))
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--quiet"]) == 0
    assert seen == [1.0]
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--compute", "bf16", "--out", str(tmp_path / "bf16.json"), "--quiet"]) == 0
    low = json.loads((tmp_path / "bf16.json").read_text())
    assert low["compute"] == "bf16" and metrics.get("compute") == "fp32"
    assert low["num_texts"] == 20 and set(low["t2a"]) == set(metrics["t2a"])


def test_errors_are_one_clear_line_without_traceback(tmp_path, capsys):
    assert main(["eval", "--ckpt", str(tmp_path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a hade checkpoint" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text('{"epochs": 1, "bogus": 2}')
    assert main(["train", "--data", str(tmp_path), "--config", str(tmp_path / "bad.json")]) == 2
    assert "unknown field(s) ['bogus']" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "s"), "--clips", "1"]) == 2
    assert "clips" in capsys.readouterr().err


def test_eval_is_deterministic_to_the_last_digit(tmp_path, tiny_model_config):
    import hade
    from hade.checkpoint import save_model
    from hade.data.readers import read_split
    from hade.data.synthcaps import generate
    from hade.eval.evaluate import evaluate

    generate(tmp_path / "d", clips=20, seed=5, sample_rate=8000, duration=1.0, progress=False)
    save_model(hade.create_model(tiny_model_config), tmp_path / "ckpt")
    runs = []
    for _ in range(2):  # a fresh load each time, as two separate `hade eval` runs
        model = hade.load(tmp_path / "ckpt")
        runs.append(evaluate(model, read_split(tmp_path / "d", "evaluation"), 1.0, batch_size=3, progress=False))
    assert json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True)
