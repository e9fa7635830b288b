"""Shared fixtures: tiny models and a tiny SynthCaps set, built once per session."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_config():
    from hade.config import ModelConfig

    return ModelConfig(
        audio_encoder="htsat-test",
        text_encoder="minilm",
        text_pretrained=False,
        text_overrides={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
        embed_dim=32,
        max_text_tokens=24,
    )


@pytest.fixture
def one_thread():
    """Tiny models run on one intra-op thread (a test module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`): on shared cores, more threads spin-wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encode_av():
    """`hade.data.av_audio.encode(path, wave, sample_rate, kind)`: an M4A, ADTS AAC or WebM file."""
    pytest.importorskip("av")
    from hade.data.av_audio import encode

    return encode
