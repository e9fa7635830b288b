"""CUDA paths: each test runs only where a CUDA device is present (`pytest -m cuda`, benchmarks/gpu.py) and is
skipped elsewhere; none of the suite depends on a GPU.

What they guard: the encoders and every head give the CPU's scores on CUDA (fp32, TF32 off), bf16 / fp16
compute stays close to fp32, and training runs on CUDA in fp32, bf16 and fp16 (with the gradient scaler)
with finite, falling losses.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

import hade
from hade.config import ModelConfig, TrainConfig
from hade.data.synthcaps import generate
from hade.models.heads import HEADS

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CAPTIONS = ["a dog barks twice", "rain falls on a metal roof", "a car passes by quickly"]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _model(config: ModelConfig, head: str) -> hade.RetrievalModel:
    torch.manual_seed(0)
    options = {"factors": 4} if "dcr" in head else {}
    return hade.create_model(ModelConfig(**{**config.__dict__, "head": head, "head_options": options})).eval()


def _scores(model, waveform: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.score(model.encode_text(CAPTIONS), model.encode_audio(waveform.to(model.device))).float().cpu()


@pytest.mark.parametrize("head", sorted(h for h in HEADS if h != "hci+ac"))
def test_every_head_scores_on_cuda_as_on_cpu(tiny_model_config, head):
    model = _model(tiny_model_config, head)
    waveform = torch.randn(2, model.clip_samples, generator=torch.Generator().manual_seed(1)) * 0.1
    on_cpu = _scores(model, waveform)
    on_gpu = _scores(model.cuda(), waveform)
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4, rtol=1e-4), (on_cpu - on_gpu).abs().max()


@pytest.mark.parametrize("compute", ["bf16", "fp16"])
def test_reduced_compute_stays_close_to_fp32(tiny_model_config, compute):
    model = _model(tiny_model_config, "tha+dcr").cuda()
    waveform = torch.randn(2, model.clip_samples, generator=torch.Generator().manual_seed(2)) * 0.1
    exact = _scores(model, waveform)
    model.set_compute(compute)
    reduced = _scores(model, waveform)
    assert torch.isfinite(reduced).all()
    assert (reduced - exact).abs().max() < 0.05 * exact.abs().max().clamp(min=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_runs_on_cuda(tmp_path, tiny_model_config, precision):
    from hade.train.trainer import train

    data = tmp_path / "data"
    generate(data, clips=24, seed=0, sample_rate=8000, duration=1.0, progress=False)
    cfg = TrainConfig(epochs=3, batch_size=8, clip_seconds=1.0, device="cuda", precision=precision,
                      num_workers=0, model=ModelConfig(**{**tiny_model_config.__dict__, "head": "tha+dcr",
                                                          "head_options": {"factors": 4}}))
    train(data, tmp_path / "run", cfg, progress=False)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    losses = [h["train_loss"] for h in history if "epoch_end" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
