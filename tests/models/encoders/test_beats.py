"""BEATs encoder: documented shapes, the iter3 checkpoint key layout through the explicit key map (no
reference package could be installed: docs/encoders.md), a refused partial load, the gated relative
position bias against its written-out formula, deterministic inference and length limits."""
import math

import pytest
import torch

from hade.errors import InputError
from hade.models.convert_audio import detect_audio_kind, load_audio_state_dict
from hade.models.encoders.audio import audio_encoder_config, audio_levels, build_audio_encoder
from hade.models.encoders.beats import BEATS_PRESETS, relative_buckets


def iter3_layout(depth=12, dim=768, patch_dim=512, ffn=3072, heads=12, kernel=128, groups=16, buckets=320,
                 classes=527):
    """Tensor names and shapes of a BEATs iter3+ AS2M checkpoint's "model" entry, as published."""
    shapes = {"patch_embedding.weight": (patch_dim, 1, 16, 16), "layer_norm.weight": (patch_dim,),
              "layer_norm.bias": (patch_dim,), "post_extract_proj.weight": (dim, patch_dim),
              "post_extract_proj.bias": (dim,), "encoder.pos_conv.0.bias": (dim,),
              "encoder.pos_conv.0.weight_g": (1, 1, kernel), "encoder.pos_conv.0.weight_v": (dim, dim // groups, kernel),
              "encoder.layer_norm.weight": (dim,), "encoder.layer_norm.bias": (dim,),
              "encoder.layers.0.self_attn.relative_attention_bias.weight": (buckets, heads),
              "predictor.weight": (classes, dim), "predictor.bias": (classes,)}
    for i in range(depth):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[p + f"self_attn.{proj}.weight"], shapes[p + f"self_attn.{proj}.bias"] = (dim, dim), (dim,)
        shapes[p + "self_attn.grep_linear.weight"], shapes[p + "self_attn.grep_linear.bias"] = (8, dim // heads), (8,)
        shapes[p + "self_attn.grep_a"] = (1, heads, 1, 1)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[p + f"{norm}.weight"], shapes[p + f"{norm}.bias"] = (dim,), (dim,)
        shapes[p + "fc1.weight"], shapes[p + "fc1.bias"] = (ffn, dim), (ffn,)
        shapes[p + "fc2.weight"], shapes[p + "fc2.bias"] = (dim, ffn), (dim,)
    return shapes


def test_iter3_preset_matches_the_published_layout_through_the_key_map():
    torch.manual_seed(0)
    ckpt = {"cfg": {"encoder_layers": 12}, "model": {k: torch.randn(s) for k, s in iter3_layout().items()}}
    assert detect_audio_kind(ckpt) == "beats"
    enc = build_audio_encoder(audio_encoder_config("beats-iter3"))
    report = load_audio_state_dict(enc, ckpt, "beats")
    assert report.complete and report.loaded and not report.unexpected
    assert len(report.matched) == len(enc.state_dict()) == len(ckpt["model"]) - 2
    assert set(report.skipped) == {"predictor.weight", "predictor.bias"}
    torch.testing.assert_close(enc.encoder.pos_conv.weight_v, ckpt["model"]["encoder.pos_conv.0.weight_v"])
    assert sum(p.numel() for p in enc.parameters()) == sum(
        math.prod(s) for k, s in iter3_layout().items() if not k.startswith("predictor"))


def test_partial_beats_load_is_refused():
    small = iter3_layout(depth=3, dim=32, patch_dim=16, ffn=64, heads=2, kernel=16, groups=4, buckets=32)
    state = {k: torch.randn(s) for k, s in small.items()}
    del state["encoder.layers.2.fc1.weight"]
    enc = build_audio_encoder(audio_encoder_config("beats-test"))
    with pytest.raises(InputError, match="refusing a partial load of the beats encoder"):
        load_audio_state_dict(enc, state, "beats")
    report = load_audio_state_dict(enc, state, "beats", allow_partial=True)
    assert report.missing == ["encoder.layers.2.fc1.weight"]


def test_documented_shapes_and_levels():
    c = BEATS_PRESETS["beats-iter3"]
    assert (c.sample_rate, c.mel_bins, c.patch_size, c.embed_dim, c.depth, c.num_heads) == (16000, 128, 16, 768, 12, 12)
    levels = audio_levels(c)
    assert levels.names == ("block 4", "block 8", "block 12") and levels.text_blocks(12) == (4, 8, 12)
    torch.manual_seed(0)
    enc = build_audio_encoder(audio_encoder_config("beats-test")).eval()
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        a, b = enc(wave), enc(wave)
    frames = 1 + (16000 - 400) // 160  # Kaldi frames (snip edges)
    steps = frames // 16
    assert a.grids == [(steps, 8)] * 3 and [tuple(s.shape) for s in a.stages] == [(2, steps * 8, 32)] * 3
    torch.testing.assert_close(a.pooled, a.stages[-1].mean(1))
    torch.testing.assert_close(a.stages[0], b.stages[0], atol=0, rtol=0)
    seconds = a.token_seconds[0]
    assert torch.equal(seconds[0], seconds[7]) and float(seconds[8, 0]) == pytest.approx(0.16)
    with pytest.raises(InputError, match="too long"):
        enc(torch.zeros(1, enc.max_samples + 1))
    with pytest.raises(InputError, match="too short"):
        enc(torch.zeros(1, 1000))


def test_relative_buckets_are_t5_buckets():
    b = relative_buckets(5, 2000, 320, 800)
    assert b[0, 0] == 0 and b[0, 1] == 161 and b[1, 0] == 1  # key after the query: upper half
    assert b[0, 79] == 160 + 79 and b[0, 80] == 160 + 80  # exact up to 80, then logarithmic
    assert b[0, 799] == 160 + 159 and b[0, 1999] == 319  # the last bucket at max_distance and beyond
    assert torch.all(b[0, 1:].diff() >= 0)


def test_gated_relative_attention_equals_its_formula():
    """softmax(q k^T / sqrt(d) + g * bias) v with g = a * (b * grep_a - 1) + 2, (a, b) = sigmoid of the two
    4-sums of grep_linear(q) per head, written out with explicit loops over heads."""
    torch.manual_seed(0)
    enc = build_audio_encoder(audio_encoder_config("beats-test")).eval()
    attn = enc.encoder.layers[1].self_attn
    torch.nn.init.normal_(attn.grep_a, 1.0, 0.5)
    x = torch.randn(2, 10, 32)
    bias = torch.randn(2, 10, 10)
    with torch.no_grad():
        got = attn(x, bias)
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        heads = []
        for h in range(2):
            qh, kh, vh = (t[..., h * 16:(h + 1) * 16] for t in (q, k, v))
            eight = attn.grep_linear(qh)  # [B, N, 8]
            a, b = torch.sigmoid(eight[..., :4].sum(-1)), torch.sigmoid(eight[..., 4:].sum(-1))
            gate = a * (b * attn.grep_a[0, h, 0, 0] - 1.0) + 2.0
            logits = qh @ kh.transpose(1, 2) / 4.0 + gate[..., None] * bias[h]
            heads.append(torch.softmax(logits, -1) @ vh)
        expected = attn.out_proj(torch.cat(heads, -1))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
