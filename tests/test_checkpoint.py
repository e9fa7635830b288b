import json

import pytest
import torch

import hade
from hade.checkpoint import save_model
from hade.errors import InputError


def test_save_load_round_trip_gives_identical_scores(tiny_model_config, tmp_path):
    torch.manual_seed(0)
    model = hade.create_model(tiny_model_config).eval()
    wave = torch.randn(2, model.max_samples)
    captions = ["a dog barks", "a bell rings twice"]
    with torch.no_grad():
        before = model.score(model.encode_text(captions), model.encode_audio(wave))
    save_model(model, tmp_path / "ckpt")
    loaded = hade.load(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded.score(loaded.encode_text(captions), loaded.encode_audio(wave))
    torch.testing.assert_close(before, after)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]


def test_load_rejects_non_checkpoints_and_mismatched_weights(tiny_model_config, tmp_path):
    with pytest.raises(InputError, match="not a hade checkpoint"):
        hade.load(tmp_path)
    model = hade.create_model(tiny_model_config)
    save_model(model, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["embed_dim"] = 48
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"model.safetensors: cannot load weights.*(size|shape)"):
        hade.load(tmp_path / "ckpt")
