"""`RetrievalModel.set_compute` / `hade.load(compute=)`: autocast encoders, float32 outputs."""
import dataclasses

import pytest
import torch

import hade
from hade.checkpoint import load, save_model
from hade.errors import InputError


@pytest.mark.parametrize("head", ["dp", "tha"])
def test_bf16_encoders_give_float32_outputs_close_to_fp32(tiny_model_config, head):
    torch.manual_seed(0)
    model = hade.create_model(dataclasses.replace(tiny_model_config, head=head)).eval()
    wave = 0.1 * torch.randn(3, model.max_samples, generator=torch.Generator().manual_seed(1))
    captions = ["a dog barks", "rain falls on a roof", "a bell rings twice"]
    with torch.inference_mode():
        ref = model.score(model.encode_text(captions), model.encode_audio(wave))
        model.set_compute("bf16")
        text, audio = model.encode_text(captions), model.encode_audio(wave)
        low = model.score(text, audio)
    for v in (*text.values(), *audio.values()):
        assert not torch.is_floating_point(v) or v.dtype == torch.float32
    assert low.dtype == torch.float32
    gap = (low - ref).abs().max().item()
    assert 0 < gap < 0.05  # bf16 rounding changes the scores a little, and only a little

    model.train()  # training keeps its own precision (TrainConfig.precision): no autocast here
    torch.manual_seed(2)
    a = model.encode_text(captions)
    model.set_compute("fp32")
    torch.manual_seed(2)
    b = model.encode_text(captions)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_bad_precisions_are_clear_errors(tiny_model_config, tmp_path):
    model = hade.create_model(tiny_model_config)
    with pytest.raises(ValueError, match="one of"):
        model.set_compute("int8")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        model.set_compute("fp16")
    save_model(model, tmp_path / "ckpt")
    assert load(tmp_path / "ckpt", compute="bf16").inference_dtype == torch.bfloat16
    with pytest.raises(InputError, match="compute: .*fp16 needs a CUDA device"):
        load(tmp_path / "ckpt", compute="fp16")
    with pytest.deprecated_call():  # the former keyword still works
        assert load(tmp_path / "ckpt", precision="bf16").inference_dtype == torch.bfloat16
