"""PaSST and BEATs (their test presets) with `dp` and `tha+dcr` through the command line:
`hade train` (the loss falls), `hade eval` (both directions), `hade index` / `hade search` and `hade classify`
on SynthCaps data, with random weights."""
import json

import numpy as np
import pytest
import soundfile as sf

from hade.cli import main
from hade.config import ModelConfig, TrainConfig, to_dict
from hade.data.synthcaps import generate

ENCODERS = ["passt-test", "beats-test"]
HEADS = ["dp", "tha+dcr"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth16k")
    generate(folder, clips=12, seed=0, sample_rate=16000, duration=1.0, progress=False)
    return folder


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_train_eval_index_search_classify(encoder, head, data, tmp_path, capsys):
    model = ModelConfig(audio_encoder=encoder, text_encoder="minilm", text_pretrained=False, embed_dim=32,
                        max_text_tokens=24, text_overrides={"num_hidden_layers": 2, "hidden_size": 32,
                                                             "num_attention_heads": 2, "intermediate_size": 64})
    cfg = TrainConfig(epochs=2, batch_size=8, lr=2e-3, text_lr=2e-3, clip_seconds=1.0, save_every_steps=1000,
                      seed=0, model=model)
    (tmp_path / "cfg.json").write_text(json.dumps(to_dict(cfg)))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(tmp_path / "cfg.json"),
                 "--head", head, "--quiet"]) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    losses = [h["loss"] for h in history if "loss" in h and "epoch_end" not in h]
    assert len(losses) >= 4
    half = len(losses) // 2
    assert sum(losses[half:]) / (len(losses) - half) < sum(losses[:half]) / half, losses
    ckpt = run / "checkpoints" / "last"
    assert json.loads((ckpt / "config.json").read_text())["audio_encoder"] == encoder

    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(data), "--split", "test", "--quiet",
                 "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"R@1", "mAP@10"} <= set(metrics["t2a"]) and {"R@1"} <= set(metrics["a2t"])

    assert main(["index", str(data), "--ckpt", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "a dog barks", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and ".wav" in json.dumps(hits)

    wave = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(40000) / 16000)).astype("float32")  # 2.5 s: windows
    sf.write(tmp_path / "tone.wav", wave, 16000)
    assert main(["classify", "--ckpt", str(ckpt), "--labels", "dog,rain,siren", "--top-k", "2",
                 "--json", str(tmp_path / "c.json"), str(tmp_path / "tone.wav")]) == 0
    (clip,) = json.loads((tmp_path / "c.json").read_text())
    assert clip["path"].endswith("tone.wav") and len(clip["top"]) == 2
    assert {p["label"] for p in clip["top"]} <= {"dog", "rain", "siren"}
    assert len(clip["windows"]) >= 2  # 2.5 s in windows of the 1 s the model was trained on


def test_models_lists_each_encoders_levels(capsys):
    assert main(["models", "--json"]) == 0
    presets = {p["name"]: p for p in json.loads(capsys.readouterr().out)["audio_encoders"]}
    assert presets["htsat-tiny"]["levels"] == ["stage 1", "stage 2", "stage 3", "stage 4"]
    assert presets["htsat-tiny"]["tha_levels"] == ["stage 2", "stage 3", "stage 4"]
    assert presets["htsat-tiny"]["text_blocks_12"] == [4, 10, 12]
    for name, rate in (("passt-s", 32000), ("beats-iter3", 16000)):
        assert presets[name]["levels"] == presets[name]["tha_levels"] == ["block 4", "block 8", "block 12"]
        assert presets[name]["text_blocks_12"] == [4, 8, 12] and presets[name]["sample_rate"] == rate
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "block 4<->text 4, block 8<->text 8, block 12<->text 12" in text
    assert "stage 2<->text 4, stage 3<->text 10, stage 4<->text 12" in text
