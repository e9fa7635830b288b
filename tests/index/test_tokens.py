"""The compressed token store: code round trip, memory-mapped codes, THA scores close to the exact ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hade.errors import InputError
from hade.index.tokens import (DEFAULT_FACTORY, NORM_BYTES, TokenCodec, decode_rows, fit_codecs, load_codecs,
                               open_codes, save_codecs, save_codes, token_keys)
from hade.models.heads.tha import level_scores


def clustered_tokens(rows: int, tokens: int = 32, dim: int = 64, clusters: int = 24, rank: int = 8,
                     seed: int = 0) -> np.ndarray:
    """[rows, tokens, dim] float32 tokens around shared centres with low-rank variation and varied norms
    (projected features are far from isotropic: a fixed seed draws the same structure every time)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    basis = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
    rng = np.random.default_rng(seed)
    x = (centres[rng.integers(0, clusters, (rows, tokens))] + rng.standard_normal((rows, tokens, rank)) @ basis
         + 0.05 * rng.standard_normal((rows, tokens, dim)))
    return (x * rng.uniform(0.5, 2.0, (rows, tokens, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def codec(single_thread) -> TokenCodec:
    with single_thread():
        return TokenCodec.fit(clustered_tokens(400, seed=1), "IVF64,PQ16")


def test_codes_round_trip_and_size(codec):
    x = clustered_tokens(20, seed=2)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (20, 32, codec.code_bytes)
    assert codec.code_bytes == 1 + 16 + NORM_BYTES  # 64 lists: 1 byte; PQ16: 16 bytes; float16 norm
    again = codec.decode(codes)
    assert again.shape == x.shape and again.dtype == np.float32
    np.testing.assert_array_equal(codec.decode(codes.copy()), again)  # deterministic
    np.testing.assert_allclose(np.linalg.norm(again, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-3)
    cos = np.sum(again * x, -1) / (np.linalg.norm(again, axis=-1) * np.linalg.norm(x, axis=-1))
    assert cos.mean() > 0.97 and cos.min() > 0.85, (cos.mean(), cos.min())
    assert x.nbytes / 2 / codes.nbytes >= 6  # vs float16: 128 bytes a token -> 19 at these small dims


def test_zero_tokens_stay_zero(codec):
    x = clustered_tokens(2, seed=3)
    x[1, 5:] = 0.0  # padding
    again = codec.decode(codec.encode(x))
    assert np.all(again[1, 5:] == 0.0) and np.all(np.linalg.norm(again[1, :5], axis=-1) > 0)


def test_tha_scores_within_bound_of_exact(codec):
    """THA's level score (both directions) on decoded tokens is within 0.06 of the exact score, and the
    ranking of audios for each text mostly kept (scores have a std of 0.12 here; the bound is what the codec's
    ~0.98 token cosine at 19 bytes a token gives on these shapes: 0.046 measured)."""
    audio = clustered_tokens(40, seed=4)
    rng = np.random.default_rng(5)
    words = audio[rng.integers(0, 40, 6), :12] + 0.3 * rng.standard_normal((6, 12, 64))
    text = torch.from_numpy(words.astype(np.float32))
    mask = torch.ones(6, 12, dtype=torch.bool)
    exact = sum(level_scores(text, mask, torch.from_numpy(audio), lam=9.0))
    approx = sum(level_scores(text, mask, torch.from_numpy(codec.decode(codec.encode(audio))), lam=9.0))
    assert float((approx - exact).abs().max()) < 0.06, float((approx - exact).abs().max())
    top_exact, top_approx = exact.topk(5).indices, approx.topk(5).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top_exact, top_approx)])
    assert overlap >= 0.8


def test_save_load_and_memory_mapped_codes(codec, tmp_path):
    x = clustered_tokens(30, seed=6)
    codecs = {"tha_audio_0": codec}
    save_codecs(tmp_path / "codecs", codecs)
    loaded = load_codecs(tmp_path / "codecs")
    assert list(loaded) == ["tha_audio_0"] and loaded["tha_audio_0"].info == codec.info
    codes = codec.encode(x)
    np.testing.assert_array_equal(loaded["tha_audio_0"].encode(x), codes)
    save_codes(tmp_path / "tha_audio_0.codes.npy", codes)
    mapped = open_codes(tmp_path / "tha_audio_0.codes.npy")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    rows = np.array([7, 2, 29])
    np.testing.assert_array_equal(decode_rows(loaded["tha_audio_0"], mapped, rows), codec.decode(codes[rows]))


def test_bad_input_is_refused(codec, tmp_path):
    with pytest.raises(InputError, match="64 dims"):
        codec.encode(np.zeros((3, 32), np.float32))
    with pytest.raises(InputError, match="uint8"):
        codec.decode(np.zeros((3, codec.code_bytes), np.int32))
    with pytest.raises(InputError, match="float16 range"):
        codec.encode(np.full((2, 64), 1e5, np.float32))
    with pytest.raises(InputError, match="too few"):
        TokenCodec.fit(np.ones((100, 64), np.float32), "PQ16")
    with pytest.raises(InputError, match="codecs.json"):
        load_codecs(tmp_path)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="uint8"):
        open_codes(tmp_path / "bad.npy")


def test_small_samples_shrink_the_coarse_lists():
    c = TokenCodec.fit(clustered_tokens(40, seed=7), DEFAULT_FACTORY)  # 1 280 tokens: 32 lists, not 256
    assert c.info.factory.startswith("OPQ8,IVF32,") and c.info.trained_on == 1280


def test_token_keys_pick_token_arrays_only():
    spec = {"tha_audio_0": {"shape": [256, 256], "dtype": "float16"},
            "tha_audio_2": {"shape": [16, 256], "dtype": "float16"},
            "embed": {"shape": [256], "dtype": "float16"}, "factors": {"shape": [8, 32], "dtype": "float16"},
            "coatt_audio_mask": {"shape": [64, 64], "dtype": "bool"}}
    assert token_keys(spec, "embed") == ["tha_audio_0", "tha_audio_2"]
    assert fit_codecs({}) == {}


def test_default_codec_keeps_eight_dims_a_subquantiser():
    from hade.index.tokens import _default_for, _fit_factory

    assert DEFAULT_FACTORY == "OPQ32,IVF256,PQ32" and _default_for(256) == DEFAULT_FACTORY
    assert _default_for(64) == "OPQ8,IVF256,PQ8" and _default_for(768) == "OPQ96,IVF256,PQ96"
    assert _default_for(60) == "OPQ6,IVF256,PQ6" and _default_for(3) == "OPQ1,IVF256,PQ1"  # divisors of the width
    assert _fit_factory(DEFAULT_FACTORY, 39 * 10, 256) == "OPQ32,IVF10,PQ32"  # the lists fit the sample
    assert _fit_factory("IVF256,PQ64x7", 39 * 10) == "IVF10,PQ64x7"
    c = TokenCodec.fit(clustered_tokens(80, dim=64, seed=3), DEFAULT_FACTORY)
    assert c.info.factory.startswith("OPQ8,IVF") and c.code_bytes == 1 + 8 + NORM_BYTES  # 8 x 8 bits
    assert c.rotation is not None and c.rotation.shape == (64, 64)