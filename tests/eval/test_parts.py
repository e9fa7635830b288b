"""`hade eval --parts`: a sum head's parts ranked alone, with the spread of their scores (hade.eval.parts)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import hade
from hade.checkpoint import save_model
from hade.cli import main
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.errors import InputError
from hade.eval.evaluate import evaluate_run
from hade.eval.metrics import retrieval_metrics
from hade.eval.parts import WHOLE, format_parts, spread

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, clips=60, seed=2, sample_rate=8000, duration=1.0, progress=False)
    return root


def _model(config, head):
    torch.manual_seed(0)
    return hade.create_model(dataclasses.replace(config, head=head)).eval()


def test_parts_sum_to_the_head_and_each_ranks_alone(root, tiny_model_config):
    split = read_split(root, "evaluation")
    model = _model(tiny_model_config, "tha+dcr")
    plain = evaluate_run(model, split, 1.0, progress=False)
    run = evaluate_run(model, split, 1.0, progress=False, parts=True)
    torch.testing.assert_close(run.scores, plain.scores, atol=1e-5, rtol=0)  # the parts add up to the head
    assert run.metrics.t2a["R@1"] == plain.metrics.t2a["R@1"]
    assert [r.name for r in run.parts] == [WHOLE, "tha", "dcr"]
    text, audio = run.encoded.text, run.encoded.audio
    for row in run.parts[1:]:
        with torch.no_grad():
            alone = model.head.summed_parts()[row.name].score(text, audio).numpy()
        metrics = retrieval_metrics(alone, run.encoded.text_clip)
        assert row.metrics["T2A R@1"] == metrics.t2a["R@1"] and row.metrics["A2T R@1"] == metrics.a2t["R@1"]
        assert row.spread == pytest.approx(float(alone.std(axis=1).mean()), rel=1e-5)
    assert run.parts[0].spread == pytest.approx(spread(plain.scores.numpy()), rel=1e-4)
    assert plain.parts is None


def test_spread_by_hand():
    assert spread(np.array([[0.0, 2.0], [1.0, 1.0]])) == pytest.approx(0.5)  # stds 1 and 0


def test_a_head_that_is_not_a_sum_is_refused_before_encoding(root, tiny_model_config, monkeypatch):
    import hade.eval.evaluate as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "encode_split", lambda *a, **k: pytest.fail("encoded before refusing"))
    with pytest.raises(InputError, match=r"--parts: head 'dp' is not a sum of parts"):
        evaluate_run(_model(tiny_model_config, "dp"), read_split(root, "evaluation"), 1.0, progress=False, parts=True)


def test_cli_prints_and_writes_the_parts(root, tiny_model_config, tmp_path, capsys):
    model = _model(tiny_model_config, "tha+dp")
    save_model(model, tmp_path / "ckpt")
    out = tmp_path / "m.json"
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt"), "--data", str(root), "--parts", "--bootstrap", "0",
                 "--clip-seconds", "1",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["parts"]
    assert [r["name"] for r in rows] == [WHOLE, "tha", "dp"]
    assert set(rows[0]["metrics"]) == {"T2A R@1", "T2A R@10", "T2A mAP@10", "A2T R@1"}
    table = format_parts(evaluate_run(model, read_split(root, "evaluation"), 1.0, progress=False, parts=True).parts)
    assert table in printed and "spread" in printed
