"""`make demo` end to end on a few clips: synthesis, training of the default head, evaluation, searches."""
import json

from hade.demo import DEMO_HEAD, run_demo


def test_demo_runs_end_to_end_on_a_few_clips(tmp_path, capsys):
    assert run_demo(tmp_path, clips=24, minutes=0.1, progress=False) == 0
    out = capsys.readouterr().out
    assert f"training head '{DEMO_HEAD}'" in out and "[4/4]" in out
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert metrics["num_audios"] >= 3 and "chance" in metrics
    saved = json.loads((tmp_path / "run" / "checkpoints" / "best" / "config.json").read_text())
    assert saved["head"] == DEMO_HEAD == "tha+dcr" and saved["clip_seconds"] == 4.0
