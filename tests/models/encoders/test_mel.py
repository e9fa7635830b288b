"""LogMel front end: slaney mel filterbank, STFT conventions, dB scaling."""
import math

import numpy as np
import pytest
import torch

from hade.models.encoders.mel import LogMel, hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_filterbank


# ---- independent reference (plain python/numpy, written from the librosa/Slaney definition) ----------
def _hz2mel(f: float) -> float:
    if f < 1000.0:
        return 3.0 * f / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _mel2hz(m: float) -> float:
    if m < 15.0:
        return 200.0 * m / 3.0
    return 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)


def _reference_melbank(sr, n_fft, n_mels, fmin, fmax):
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    lo, hi = _hz2mel(fmin), _hz2mel(fmax)
    edges = [_mel2hz(lo + i * (hi - lo) / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        left, center, right = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if left < f <= center:
                w = (f - left) / (center - left)
            elif center < f < right:
                w = (right - f) / (right - center)
            else:
                w = 0.0
            bank[m, k] = w * 2.0 / (right - left)  # slaney: unit area per triangle
    return bank, np.array(edges)


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [(32000, 1024, 64, 50.0, 14000.0), (16000, 512, 64, 50.0, 8000.0), (8000, 256, 32, 20.0, 4000.0)],
)
def test_filterbank_matches_independent_slaney(sr, n_fft, n_mels, fmin, fmax):
    ours = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy()
    ref, _ = _reference_melbank(sr, n_fft, n_mels, fmin, fmax)
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert (ours.sum(axis=1) > 0).all()  # no empty filters in these configurations


def test_slaney_mel_scale_points():
    f = torch.tensor([0.0, 200.0, 1000.0, 6400.0, 14000.0], dtype=torch.float64)
    m = hz_to_mel_slaney(f)
    np.testing.assert_allclose(m[:4].numpy(), [0.0, 3.0, 15.0, 42.0], atol=1e-9)  # 6400 Hz = 15 + 27
    np.testing.assert_allclose(mel_to_hz_slaney(m).numpy(), f.numpy(), rtol=1e-12)


@pytest.mark.parametrize("tone", [440.0, 1000.0, 3150.0, 6000.0])
def test_pure_tone_peaks_at_nearest_mel_band(tone):
    sr, n_fft, n_mels = 16000, 512, 64
    fe = LogMel(sr, n_fft, n_fft, 160, n_mels, 50.0, 8000.0)
    t = torch.arange(sr) / sr
    out = fe(torch.sin(2 * math.pi * tone * t)[None])
    assert out.shape == (1, 1, 1 + sr // 160, n_mels)
    band = int(out[0, 0, 5:-5].mean(0).argmax())
    _, edges = _reference_melbank(sr, n_fft, n_mels, 50.0, 8000.0)
    centers = edges[1:-1]
    expected = int(np.argmin(np.abs(centers - tone)))
    assert abs(band - expected) <= 1
    # and the peak band's triangle actually contains the tone
    assert edges[band] < tone < edges[band + 2]


def test_logmel_matches_numpy_stft():
    sr, n_fft, hop, n_mels = 8000, 256, 64, 16
    fe = LogMel(sr, n_fft, n_fft, hop, n_mels, 0.0, 4000.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1000)).astype(np.float32) * 0.1
    out = fe(torch.from_numpy(x)).numpy()
    n_frames = 1 + 1000 // hop
    assert out.shape == (2, 1, n_frames, n_mels)

    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(x.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = np.stack([padded[:, i * hop: i * hop + n_fft] for i in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    bank, _ = _reference_melbank(sr, n_fft, n_mels, 0.0, 4000.0)
    ref = 10.0 * np.log10(np.maximum(power @ bank.T, 1e-10))
    np.testing.assert_allclose(out[:, 0], ref, atol=2e-3)


def test_silence_floor_and_no_state():
    fe = LogMel(8000, 256, 256, 128, 32, 20.0, 4000.0)
    out = fe(torch.zeros(1, 800))
    assert torch.allclose(out, torch.full_like(out, -100.0))  # 10*log10(1e-10), no top_db
    assert len(fe.state_dict()) == 0  # window / filterbank are recomputed, never loaded


def test_too_short_input_raises():
    fe = LogMel(8000, 256, 256, 128, 32, 20.0, 4000.0)
    with pytest.raises(ValueError, match="at least 129"):
        fe(torch.zeros(1, 100))
