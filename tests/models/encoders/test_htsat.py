"""HTSAT Swin encoder: geometry, checkpoint-compatible names, attention, token times."""
import math

import pytest
import torch

from hade.models.encoders.htsat import HTSAT_PRESETS, HTSATConfig, HTSATEncoder, build_htsat, htsat_config
from hade.models.encoders.swin import SwinTransformerBlock
from hade.models.encoders.types import AudioFeatures


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HTSATEncoder(htsat_config("htsat-tiny")).eval()


@pytest.fixture(scope="module")
def tiny_out(tiny):
    torch.manual_seed(1)
    with torch.no_grad():
        return tiny(torch.randn(2, 320_000) * 0.1)


@pytest.fixture()
def small():
    torch.manual_seed(0)
    return build_htsat("htsat-test").eval()


# ---- geometry -----------------------------------------------------------------------------------
def test_tiny_preset_is_the_reference():
    c = HTSAT_PRESETS["htsat-tiny"]
    assert (c.sample_rate, c.n_fft, c.hop_length, c.mel_bins, c.fmin, c.fmax) == (32000, 1024, 320, 64, 50, 14000)
    assert (c.spec_size, c.patch_size, c.in_chans, c.embed_dim, c.window_size) == (256, 4, 1, 96, 8)
    assert c.depths == [2, 2, 6, 2] and c.num_heads == [4, 8, 16, 32]
    assert (c.mlp_ratio, c.qkv_bias, c.drop_path_rate) == (4.0, True, 0.1)
    assert c.freq_ratio == 4 and c.target_frames == 1024


def test_tiny_stage_shapes(tiny, tiny_out):
    out = tiny_out
    assert isinstance(out, AudioFeatures)
    assert [tuple(s.shape) for s in out.stages] == [(2, 4096, 96), (2, 1024, 192), (2, 256, 384), (2, 64, 768)]
    assert out.grids == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert tuple(out.pooled.shape) == (2, 768)
    torch.testing.assert_close(out.pooled, out.stages[-1].mean(1))
    assert [tuple(t.shape) for t in out.token_seconds] == [(4096, 2), (1024, 2), (256, 2), (64, 2)]
    assert tiny.stage_dims == [96, 192, 384, 768] and tiny.num_stages == 4
    assert tiny.max_samples == 1024 * 320 - 1
    # last stage is layer-normed (per token: mean 0, unit variance before the identity affine at init)
    last = out.stages[-1]
    torch.testing.assert_close(last.mean(-1), torch.zeros_like(last.mean(-1)), atol=1e-4, rtol=0)
    assert all(torch.isfinite(s).all() for s in out.stages)


def test_cpu_preset_shapes_for_4s_at_16k():
    torch.manual_seed(0)
    enc = build_htsat("htsat-cpu").eval()
    c = enc.config
    assert c.sample_rate == 16000 and c.mel_bins >= 32
    assert 1 + 64_000 // c.hop_length <= c.target_frames  # 4 s fits without cropping
    assert enc.max_samples >= 64_000
    with torch.no_grad():
        out = enc(torch.randn(3, 64_000) * 0.1)
    m0 = out.grids[0][0] * out.grids[0][1]
    assert m0 <= 1024
    assert [tuple(s.shape) for s in out.stages] == [
        (3, m0 >> (2 * s), c.embed_dim * 2**s) for s in range(enc.num_stages)
    ]
    assert tuple(out.pooled.shape) == (3, enc.stage_dims[-1])


# ---- state dict ---------------------------------------------------------------------------------
def _reference_keys(embed=96, depths=(2, 2, 6, 2), heads=(4, 8, 16, 32), mels=64, shifted_stages=(0, 1, 2)):
    """Expected names/shapes from atr-systems.md §3.4 (minus STFT/mel, tscam_conv, head)."""
    exp = {f"bn0.{n}": (mels,) for n in ("weight", "bias", "running_mean", "running_var")}
    exp["bn0.num_batches_tracked"] = ()
    exp.update({"patch_embed.proj.weight": (embed, 1, 4, 4), "patch_embed.proj.bias": (embed,),
                "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,)})
    n_windows = {0: 64, 1: 16, 2: 4}
    for s, (depth, h) in enumerate(zip(depths, heads)):
        c = embed * 2**s
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}."
            exp.update({
                p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                p + "attn.relative_position_bias_table": (225, h),
                p + "attn.relative_position_index": (64, 64),
                p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
                p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
            })
            if b % 2 == 1 and s in shifted_stages:
                exp[p + "attn_mask"] = (n_windows[s], 64, 64)
        if s < len(depths) - 1:
            exp.update({f"layers.{s}.downsample.norm.weight": (4 * c,), f"layers.{s}.downsample.norm.bias": (4 * c,),
                        f"layers.{s}.downsample.reduction.weight": (2 * c, 4 * c)})
    last = embed * 2 ** (len(depths) - 1)
    exp.update({"norm.weight": (last,), "norm.bias": (last,)})
    return exp


def test_state_dict_names_and_shapes_match_reference(tiny):
    sd = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    expected = _reference_keys()
    assert set(sd) == set(expected), (sorted(set(sd) - set(expected))[:5], sorted(set(expected) - set(sd))[:5])
    assert sd == expected
    # representative spot checks
    assert sd["layers.0.blocks.1.attn_mask"] == (64, 64, 64)
    assert sd["layers.1.blocks.1.attn_mask"] == (16, 64, 64)
    assert sd["layers.2.blocks.5.attn_mask"] == (4, 64, 64)
    assert not any(k.startswith("layers.3.") and k.endswith("attn_mask") for k in sd)
    assert "layers.2.downsample.reduction.bias" not in sd
    assert not any(k.startswith(("tscam_conv", "head", "spectrogram_extractor", "logmel_extractor")) for k in sd)
    assert tiny.state_dict()["layers.0.blocks.0.attn.relative_position_index"].dtype == torch.int64


def test_attn_mask_values_match_reference_convention(tiny):
    mask = tiny.layers[0].blocks[1].attn_mask
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()  # top-left window is one region
    assert (mask[-1] != 0).any()  # bottom-right window mixes 4 regions


def test_tiny_parameter_count(tiny):
    n = sum(p.numel() for p in tiny.parameters())
    assert abs(n - 27.5e6) / 27.5e6 < 0.02, n


def test_state_dict_round_trip(tiny):
    other = HTSATEncoder(htsat_config("htsat-tiny"))
    missing, unexpected = other.load_state_dict(tiny.state_dict(), strict=True)
    assert not missing and not unexpected


# ---- attention ----------------------------------------------------------------------------------
def _naive_block(blk: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """Shifted-window attention written with explicit loops over windows and softmax(QK^T*s + B + M)V."""
    h, w = blk.input_resolution
    ws, shift, heads = blk.window_size, blk.shift_size, blk.num_heads
    bsz, _, c = x.shape
    hd = c // heads
    y = blk.norm1(x).view(bsz, h, w, c)
    y = torch.roll(y, (-shift, -shift), (1, 2))
    region = torch.zeros(h, w, dtype=torch.long)  # label of each rolled position (3x3 regions)
    for r in range(h):
        for col in range(w):
            rr = 0 if r < h - ws else (1 if r < h - shift else 2)
            cc = 0 if col < w - ws else (1 if col < w - shift else 2)
            region[r, col] = 3 * rr + cc if shift else 0
    table = blk.attn.relative_position_bias_table
    out = torch.zeros_like(y)
    pos = [(i, j) for i in range(ws) for j in range(ws)]
    bias = torch.stack([torch.stack([table[(a[0] - b[0] + ws - 1) * (2 * ws - 1) + (a[1] - b[1] + ws - 1)]
                                     for b in pos]) for a in pos])  # [N, N, heads]
    for wi in range(h // ws):
        for wj in range(w // ws):
            tok = y[:, wi * ws:(wi + 1) * ws, wj * ws:(wj + 1) * ws].reshape(bsz, ws * ws, c)
            lab = region[wi * ws:(wi + 1) * ws, wj * ws:(wj + 1) * ws].reshape(-1)
            qkv = blk.attn.qkv(tok).view(bsz, ws * ws, 3, heads, hd)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, heads, hd]
            logits = torch.einsum("bnhd,bmhd->bhnm", q, k) * hd**-0.5 + bias.permute(2, 0, 1)
            logits = logits.masked_fill(lab[:, None] != lab[None, :], float("-inf"))
            o = torch.einsum("bhnm,bmhd->bnhd", logits.softmax(-1), v).reshape(bsz, ws * ws, c)
            out[:, wi * ws:(wi + 1) * ws, wj * ws:(wj + 1) * ws] = blk.attn.proj(o).view(bsz, ws, ws, c)
    out = torch.roll(out, (shift, shift), (1, 2)).reshape(bsz, h * w, c)
    x = x + out
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_sdpa_equals_naive(shift):
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=16, input_resolution=(8, 8), num_heads=2, window_size=4, shift_size=shift).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(0, 1.0)  # make the bias matter
    assert (blk.attn_mask is not None) == bool(shift)
    x = torch.randn(3, 64, 16)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), _naive_block(blk, x), atol=1e-5, rtol=1e-4)


def test_gradients_reach_bias_tables_and_bn0(small):
    small.train()
    out = small(torch.randn(2, 8000) * 0.1)
    (out.pooled.square().sum() + sum(s.mean() for s in out.stages)).backward()
    assert small.layers[0].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0
    assert small.bn0.weight.grad is not None and small.patch_embed.proj.weight.grad.abs().sum() > 0


# ---- behaviour ----------------------------------------------------------------------------------
def test_eval_is_deterministic_and_training_is_not(small):
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        a, b = small(x), small(x)
    for s, t in zip(a.stages, b.stages):
        assert torch.equal(s, t)
    enc = build_htsat("htsat-test", spec_augment=True, drop_path_rate=0.2).train()
    enc.load_state_dict(small.state_dict())
    torch.manual_seed(3)
    with torch.no_grad():
        c, d = enc(x), enc(x)
    assert not torch.allclose(c.pooled, d.pooled)


def test_spec_augment_masks_stripes():
    enc = build_htsat("htsat-test", spec_augment=True, time_drop_width=16, freq_drop_width=4).train()
    torch.manual_seed(0)
    img = enc.spectrogram_image(torch.randn(8, 8000))
    enc.eval()
    clean = enc.spectrogram_image(torch.randn(8, 8000))
    assert (img == 0).float().mean() > 0.01
    assert (clean == 0).float().mean() < 1e-3


def test_too_long_input_raises_clear_error(small):
    n = small.max_samples
    with torch.no_grad():
        small(torch.zeros(1, n))  # exactly the maximum fits
    with pytest.raises(ValueError, match=r"too long.*2\.05 s.*crop or chunk"):
        small(torch.zeros(1, n + 1))
    with pytest.raises(ValueError, match="too short"):
        small(torch.zeros(1, 10))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        small(torch.zeros(8000))


def test_short_input_is_stretched_not_padded(small):
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        img = small.spectrogram_image(x)
    assert img.shape == (1, 1, 64, 64)
    # no padding: the last columns of the last chunk still carry signal (not a constant pad value)
    assert img[0, 0, 32:, -4:].std() > 0.1


# ---- token times --------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,seconds", [("htsat-test", 1.0), ("htsat-test", 0.5), ("htsat-cpu", 4.0),
                                            ("htsat-tiny", 10.0)])
def test_token_seconds_cover_clip_and_are_monotone(preset, seconds):
    cfg = htsat_config(preset)
    enc = HTSATEncoder(cfg)
    n = int(seconds * cfg.sample_rate)
    for (gh, gw), ts in zip(cfg.grids, enc.token_seconds(n)):
        t = ts.view(gh, gw, 2).double()
        assert t[..., 0].min() == 0.0 and math.isclose(float(t[..., 1].max()), seconds, rel_tol=1e-6)
        assert (t[..., 1] > t[..., 0]).all()
        # within a grid row (one time chunk) the tokens tile time contiguously, increasing
        assert (t[:, 1:, 0] >= t[:, :-1, 0]).all()
        assert torch.allclose(t[:, 1:, 0], t[:, :-1, 1])
        # consecutive chunks continue where the previous one stopped; rows of one chunk agree
        rows_per_chunk = max(1, gh // cfg.freq_ratio)
        chunk_rows = t[::rows_per_chunk]
        assert torch.allclose(chunk_rows[1:, 0, 0], chunk_rows[:-1, -1, 1])
        assert torch.allclose(t[0], t[rows_per_chunk - 1])


def test_token_seconds_locate_a_click():
    enc = build_htsat("htsat-cpu").eval()
    cfg = enc.config
    sr = cfg.sample_rate
    for click_s in (0.7, 2.9, 3.6):
        x = torch.zeros(1, 4 * sr)
        x[0, int(click_s * sr)] = 1.0
        with torch.no_grad():
            img = enc.spectrogram_image(x)[0, 0]
        energy = img.view(cfg.freq_ratio, cfg.mel_bins, -1).mean(1)  # [chunk, column]
        chunk, col = divmod(int(energy.argmax()), energy.shape[1])
        row = chunk * cfg.mel_bins  # any row of that chunk
        p = cfg.patch_size
        gw = cfg.grids[0][1]
        start, end = enc.token_seconds(4 * sr)[0][(row // p) * gw + col // p].tolist()
        frame = cfg.hop_length / sr
        assert start - frame <= click_s <= end + frame, (click_s, start, end)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="multiple of mel_bins"):
        HTSATConfig(spec_size=256, mel_bins=48)
    with pytest.raises(ValueError, match="window"):
        htsat_config("htsat-test", window_size=3)
    with pytest.raises(ValueError, match="unknown HTSAT preset"):
        htsat_config("htsat-huge")
    with pytest.raises(ValueError, match="unknown HTSATConfig field"):
        HTSATConfig.from_dict({"embed": 96})
    cfg = htsat_config("htsat-cpu")
    assert HTSATConfig.from_dict(cfg.to_dict()) == cfg
    cfg.depths[0] = 7  # a copy: the preset itself is untouched
    assert HTSAT_PRESETS["htsat-cpu"].depths[0] == 2
