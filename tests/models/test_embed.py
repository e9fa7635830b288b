"""`RetrievalModel.embed_text` / `embed_audio` (hade.models.embed): shapes, normalisation, no grad, eval
mode, batching, a str as one text, waveforms at any rate and length, windows as `hade index` cuts them,
and the error for heads without pooled vectors. Equality with a built index: tests/index/test_export.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

import hade
from hade.data.windows import resolve_window, window_batch, window_bounds
from hade.errors import AudioError, InputError
from hade.models.embed import WindowEmbeddings

TEXTS = ["a dog barks", "rain falls on a tin roof", "a bell rings twice", "an engine idles", "birds chirp"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(config, head: str):
    torch.manual_seed(0)
    return hade.create_model(dataclasses.replace(config, head=head, text_config=None))


@pytest.fixture(scope="module")
def dp_model(tiny_model_config):
    """A fresh tiny DP model, in training mode as `create_model` returns it."""
    return _model(tiny_model_config, "dp")


def _wave(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def _reference_text(model, texts: list[str]) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model.head.pooled_text(model.encode_text(texts)).numpy()


def _reference_windows(model, wave: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pooled vectors of the windows of `wave` (at the model's rate), cut and padded as `hade index` does."""
    win, hop = resolve_window(model.sample_rate, model.max_samples, None, None, model.clip_samples)
    bounds = window_bounds(len(wave), win, hop)
    model.eval()
    with torch.no_grad():
        reprs = model.encode_audio(torch.from_numpy(window_batch([wave[s:e] for s, e in bounds], win)))
        return model.head.pooled_audio(reprs).numpy(), bounds


def test_embed_text_is_normalised_float32_numpy_in_eval_mode_without_grad(dp_model):
    dp_model.train()
    dp_model.audio_encoder.eval()  # e.g. a frozen encoder during training
    vecs = dp_model.embed_text(TEXTS)
    assert dp_model.training and dp_model.text_encoder.training  # the caller's modes are restored
    assert not dp_model.audio_encoder.training
    assert isinstance(vecs, np.ndarray) and vecs.dtype == np.float32 and vecs.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vecs, _reference_text(dp_model, TEXTS), atol=1e-6)
    dp_model.train()
    assert np.array_equal(dp_model.embed_text(TEXTS), vecs)  # eval mode: no dropout between calls
    batched = dp_model.embed_text(TEXTS, batch_size=2)
    np.testing.assert_allclose(batched, vecs, atol=1e-5)


def test_a_single_string_is_one_text_not_its_characters(dp_model):
    one = dp_model.embed_text("a dog barks")
    assert one.shape == (1, 32)
    np.testing.assert_allclose(one[0], dp_model.embed_text(TEXTS)[0], atol=1e-5)
    with pytest.raises(InputError, match="text 1 is a NoneType, expected a str"):
        dp_model.embed_text(["a dog", None])
    with pytest.raises(InputError, match="no texts"):
        dp_model.embed_text([])
    with pytest.raises(InputError, match="batch_size"):
        dp_model.embed_text(TEXTS, batch_size=0)


def test_embed_audio_cuts_long_audio_into_the_index_windows(dp_model):
    rate = dp_model.sample_rate
    long = _wave(5.0, rate)
    win = dp_model.embed_audio(long, sample_rate=rate, per_window=True)
    expect, bounds = _reference_windows(dp_model, long)
    assert isinstance(win, WindowEmbeddings) and len(win) == len(bounds) > 2
    assert win.item.tolist() == [0] * len(bounds)
    np.testing.assert_allclose(win.start, [s / rate for s, _ in bounds])
    np.testing.assert_allclose(win.end, [e / rate for _, e in bounds])
    assert win.end[-1] == pytest.approx(5.0)
    np.testing.assert_allclose(win.vectors, expect, atol=1e-5)
    pooled = dp_model.embed_audio(torch.from_numpy(long), sample_rate=rate)  # a tensor works the same
    assert pooled.shape == (1, 32) and pooled.dtype == np.float32
    mean = F.normalize(torch.from_numpy(expect).mean(0, keepdim=True), dim=-1).numpy()
    np.testing.assert_allclose(pooled, mean, atol=1e-5)  # pooling: normalised mean of the windows


def test_short_clips_are_zero_padded_like_the_index_and_items_keep_their_order(dp_model, tmp_path):
    rate = dp_model.sample_rate
    short, long = _wave(0.4, rate, seed=1), _wave(3.0, rate, seed=2)
    sf.write(tmp_path / "short.wav", short, rate, subtype="FLOAT")
    items = [long, tmp_path / "short.wav", str(tmp_path / "short.wav")]
    win = dp_model.embed_audio(items, sample_rate=rate, per_window=True, batch_size=3)
    n_long = len(_reference_windows(dp_model, long)[1])
    assert win.item.tolist() == [0] * n_long + [1, 2]
    assert win.end[-1] == pytest.approx(0.4) and win.start[-1] == 0.0
    expect_short = _reference_windows(dp_model, short)[0]
    np.testing.assert_allclose(win.vectors[-2:], np.repeat(expect_short, 2, 0), atol=1e-5)
    per_item = dp_model.embed_audio(items, sample_rate=rate)
    assert per_item.shape == (3, 32)
    np.testing.assert_allclose(per_item, win.pooled(3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(per_item, axis=1), 1.0, atol=1e-6)


def test_waveforms_at_another_rate_are_resampled_with_soxr(dp_model):
    rate = dp_model.sample_rate
    wave = _wave(1.0, 2 * rate, seed=3)
    got = dp_model.embed_audio(wave, sample_rate=2 * rate)
    expect = dp_model.embed_audio(soxr.resample(wave, 2 * rate, rate, quality="HQ"), sample_rate=rate)
    np.testing.assert_allclose(got, expect, atol=1e-6)
    batch = np.stack([wave, wave[::-1].copy()])  # a 2-D array is a batch of N waveforms
    assert dp_model.embed_audio(batch, sample_rate=2 * rate).shape == (2, 32)


def test_bad_audio_items_are_clear_errors(dp_model, tmp_path):
    with pytest.raises(InputError, match="item 0 is a waveform; give its sample_rate="):
        dp_model.embed_audio(_wave(1.0, 8000))
    with pytest.raises(InputError, match=r"item 1 must be a non-empty mono waveform \[T\]"):
        dp_model.embed_audio([_wave(1.0, 8000), np.zeros((2, 100), np.float32)], sample_rate=8000)
    with pytest.raises(InputError, match="item 0 is a int"):
        dp_model.embed_audio([3])
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="broken.wav"):
        dp_model.embed_audio([tmp_path / "broken.wav"])


def test_heads_without_pooled_vectors_are_refused_naming_those_with_them(tiny_model_config):
    from hade.models.heads import head_capabilities, pooled_heads

    tha = _model(tiny_model_config, "tha")
    assert not tha.head.capabilities.has_pooled
    names = pooled_heads()
    assert "dp" in names and "tha+dcr" in names and "tha" not in names
    assert all(head_capabilities(n).has_pooled for n in names)
    for call in (lambda: tha.embed_text(["a dog"]), lambda: tha.embed_audio(_wave(1.0, 8000), sample_rate=8000)):
        with pytest.raises(InputError, match=r"head 'tha' has no pooled vector.*heads with one: .*\bdp\b"):
            call()


def test_every_head_with_pooled_vectors_embeds(tiny_model_config):
    """The contract, not a class: a composite head (THA+DCR) embeds through its pooled part."""
    model = _model(tiny_model_config, "tha+dcr")
    vecs = model.embed_text(TEXTS[:2])
    np.testing.assert_allclose(vecs, _reference_text(model, TEXTS[:2]), atol=1e-6)
    audio = model.embed_audio(_wave(1.0, 8000), sample_rate=8000)
    assert audio.shape[0] == 1 and np.isfinite(audio).all()


def test_progress_bar_on_request_and_for_long_lists_only(dp_model, capsys):
    dp_model.embed_text(TEXTS, progress=True)
    assert "embed text" in capsys.readouterr().err
    dp_model.embed_text(TEXTS, progress=False)
    dp_model.embed_text(TEXTS)  # auto: a short list shows none
    dp_model.embed_audio(_wave(1.0, 8000), sample_rate=8000)
    assert capsys.readouterr().err == ""
    dp_model.embed_audio(_wave(1.0, 8000), sample_rate=8000, progress=True)
    assert "embed audio" in capsys.readouterr().err


def test_a_batch_job_can_skip_bad_items_and_hear_about_them(dp_model, tmp_path):
    from hade.models.embed import embed_windows

    (tmp_path / "broken.wav").write_bytes(b"not audio")
    rate = dp_model.sample_rate
    items = [_wave(3.0, rate), tmp_path / "broken.wav", _wave(0.5, rate, seed=4)]
    seen = []
    win = embed_windows(dp_model, items, sample_rate=rate, on_error=lambda i, err: seen.append((i, str(err))))
    assert [i for i, _ in seen] == [1] and "broken.wav" in seen[0][1]
    assert set(win.item.tolist()) == {0, 2}
    full = dp_model.embed_audio([items[0], items[2]], sample_rate=rate, per_window=True)
    np.testing.assert_allclose(win.vectors, full.vectors, atol=1e-6)
    none = embed_windows(dp_model, [tmp_path / "broken.wav"], on_error=lambda i, err: None)
    assert len(none) == 0 and none.vectors.shape == (0, 0)
    with pytest.raises(InputError, match="no audio given"):
        dp_model.embed_audio(np.zeros((0, 100), np.float32), sample_rate=rate)
