import pytest
import torch

import hade
from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.heads import HEADS


def test_tiny_model_encodes_and_scores_all_pairs(tiny_model_config):
    model = hade.create_model(tiny_model_config).eval()
    audio = model.encode_audio(torch.randn(3, model.max_samples))
    text = model.encode_text(["a dog barks", "rain falls", "a high whistle, then a bell rings twice"])
    scores = model.score(text, audio)
    assert scores.shape == (3, 3)
    assert torch.all(scores.abs() <= 1.0 + 1e-5)  # DP is a cosine
    # scoring is per pair: scoring a subset gives the same numbers
    sub = model.score({k: v[1:2] for k, v in text.items()}, audio)
    torch.testing.assert_close(sub, scores[1:2])


def test_text_config_is_filled_for_checkpoints(tiny_model_config):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "text_config": None})
    model = hade.create_model(cfg)
    assert model.config.text_config["hidden_size"] == 32
    assert cfg.text_config is None  # the caller's config (shared fixtures!) is left as it was


def test_unknown_head_and_preset_are_clear_errors(tiny_model_config):
    with pytest.raises(InputError, match=r"unknown head 'nope'.*'dp'"):
        hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": "nope"}))
    with pytest.raises(InputError, match=r"audio_encoder: unknown preset 'htsat-huge'"):
        hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "audio_encoder": "htsat-huge"}))
    with pytest.raises(InputError, match=r"audio_overrides: unknown HTSATConfig field"):
        hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "audio_overrides": {"depth": 3}}))


def test_registry_lists_dp():
    assert "dp" in HEADS
