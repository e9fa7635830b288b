"""PaSST encoder: presets, declared levels, token layout and times, deterministic inference, patchout only
in training, length limits."""
import pytest
import torch

from hade.errors import InputError
from hade.models.encoders.audio import audio_encoder_config, audio_levels, build_audio_encoder
from hade.models.encoders.passt import PASST_PRESETS, PaSSTConfig


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_audio_encoder(audio_encoder_config("passt-test")).eval()


def test_passt_s_preset_is_the_reference_geometry():
    c = PASST_PRESETS["passt-s"]
    assert (c.sample_rate, c.n_fft, c.win_length, c.hop_length, c.mel_bins, c.fmin, c.fmax) == (
        32000, 1024, 800, 320, 128, 0.0, 15000.0)
    assert (c.patch_size, c.stride, c.embed_dim, c.depth, c.num_heads) == (16, 10, 768, 12, 12)
    assert (c.freq_patches, c.time_patches) == (12, 99)
    assert c.max_samples == 320_000  # one 10 s segment
    levels = audio_levels(c)
    assert levels.names == ("block 4", "block 8", "block 12") and levels.dims == (768,) * 3
    assert levels.text_blocks(12) == (4, 8, 12) and levels.text_blocks(6) == (2, 4, 6)


def test_levels_tokens_grid_and_pooled(small):
    c = small.config
    with torch.no_grad():
        out = small(torch.randn(2, 16000) * 0.1)
    frames = 1 + (16000 - 1) // c.hop_length
    cols = (frames - c.patch_size) // c.stride + 1
    assert out.grids == [(12, cols)] * 3
    assert [tuple(s.shape) for s in out.stages] == [(2, 12 * cols, 32)] * 3
    assert tuple(out.pooled.shape) == (2, 32)
    seconds = out.token_seconds[0]
    assert seconds.shape == (12 * cols, 2)
    # row-major (frequency, time): the first row's columns step by stride * hop / sr = 0.1 s
    torch.testing.assert_close(seconds[1, 0] - seconds[0, 0], torch.tensor(0.1))
    torch.testing.assert_close(seconds[cols], seconds[0])
    assert float(seconds[:, 1].max()) <= 1.0


def test_inference_is_deterministic_and_training_drops_patches(small):
    x = torch.randn(1, 32000) * 0.1
    with torch.no_grad():
        a, b = small(x), small(x)
    torch.testing.assert_close(a.stages[-1], b.stages[-1], atol=0, rtol=0)
    small.train()
    try:
        out = small(x)
    finally:
        small.eval()
    rows, cols = a.grids[0]
    c = small.config
    assert out.grids[0] == (rows - c.s_patchout_f, cols - c.s_patchout_t)
    assert out.stages[0].shape[1] == out.token_seconds[0].shape[0] == (rows - 1) * (cols - 2)


def test_length_limits_are_clear_errors(small):
    c = small.config
    with pytest.raises(InputError, match="too long"):
        small(torch.zeros(1, c.max_samples + 1))
    with pytest.raises(InputError, match="too short"):
        small(torch.zeros(1, c.min_samples - 1))
    small(torch.zeros(1, c.max_samples))  # one full segment fits


def test_bad_configs_name_the_field():
    with pytest.raises(InputError, match="levels"):
        PaSSTConfig(depth=3, levels=[2, 4])
    with pytest.raises(InputError, match="s_patchout_t"):
        PaSSTConfig(s_patchout_t=99)
    with pytest.raises(InputError, match="unknown PaSSTConfig field"):
        audio_encoder_config("passt-test", {"depths": [2]})


@pytest.mark.parametrize("encoder", ["passt-test", "beats-test"])
@pytest.mark.parametrize("head", ["tha", "tha+dcr", "coatt-single", "hci", "dp"])
def test_token_heads_run_on_vit_levels(head, encoder, tiny_model_config):
    """THA aligns the declared blocks with text blocks at the same relative depth; co-attention and HCI read
    the declared levels; all pairs score the same as one pair at a time."""
    import dataclasses

    import hade

    torch.manual_seed(0)
    model = hade.create_model(dataclasses.replace(tiny_model_config, audio_encoder=encoder, head=head)).eval()
    with torch.no_grad():
        audio = model.encode_audio(torch.randn(3, 16000) * 0.1)
        text = model.encode_text(["a dog barks", "rain on a roof"])
        scores = model.score(text, audio)
        single = model.score({k: v[1:2] for k, v in text.items()}, {k: v[2:3] for k, v in audio.items()})
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores[1:2, 2:3], single, atol=1e-5, rtol=1e-5)
    if "tha" in head:
        tha = model.head.parts["tha"] if hasattr(model.head, "parts") else model.head
        assert tha.audio_stages == (1, 2, 3) and tha.text_blocks == (1, 1, 2)  # blocks 1/2/3 of 3 <-> 2 text blocks
