"""Kaldi-style mel filterbanks and log-mel fbank features in plain torch ops.

PaSST's front end multiplies a power spectrogram by Kaldi's triangular mel banks; BEATs feeds Kaldi
``compute-fbank`` features (25 ms Povey window, 10 ms shift, DC removal, pre-emphasis 0.97, log energies
of 128 bins). Both originals take them from ``torchaudio.compliance.kaldi``. torchaudio is not a hade
dependency: its wheels are built for one torch release each (none matches hade's torch, and its C++ part
then fails to load), and hade needs only these two small, well-documented functions, so they are written
here with torch ops (batched and differentiable) and tested against the originals' reference code
(tests/models/encoders/test_kaldi.py). Dithering is not implemented (Kaldi's default adds random noise;
BEATs and PaSST both turn it off).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filterbank (no VTLN warping) -> ``[num_bins, n_fft // 2 + 1]`` float32.

    Triangles are equally spaced on the mel scale between ``low_freq`` and ``high_freq`` (``high_freq <= 0``
    counts down from Nyquist, as in Kaldi) and are computed in the mel domain. The column of the Nyquist bin
    is zero (Kaldi's banks cover the first ``n_fft // 2`` FFT bins)."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"mel_banks: need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high_freq}")
    num_fft_bins = n_fft // 2
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(sample_rate / n_fft * torch.arange(num_fft_bins, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).to(torch.float32)


def povey_window(length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's default window: a Hann window (symmetric) raised to the power 0.85."""
    return torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85).to(dtype)


def fbank(waveform: torch.Tensor, sample_rate: int, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
          frame_shift_ms: float = 10.0, low_freq: float = 20.0, high_freq: float = 0.0,
          preemphasis: float = 0.97, log_floor: float = 1.1920928955078125e-07) -> torch.Tensor:
    """Kaldi ``compute-fbank`` log-mel energies of a batch, ``[B, T]`` -> ``[B, frames, num_mel_bins]``.

    Kaldi's defaults with dither 0: snip_edges (frames = 1 + (T - window) // shift, none past the end),
    per-frame DC removal, pre-emphasis, Povey window, FFT size the next power of two of the window, power
    spectrum, mel banks from ``low_freq`` to ``high_freq`` (<= 0: below Nyquist), log clamped at the
    float32 epsilon (Kaldi's ``use_log_fbank``, ``use_power``)."""
    if waveform.dim() != 2:
        raise ValueError(f"fbank: expected a [batch, samples] waveform, got shape {tuple(waveform.shape)}")
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if waveform.shape[1] < window:
        raise ValueError(f"fbank: {waveform.shape[1]} samples are fewer than one {window}-sample frame")
    n_fft = 1 << math.ceil(math.log2(window))
    frames = waveform.unfold(1, window, shift)  # [B, F, window]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # Kaldi repeats the first sample
        frames = frames - preemphasis * previous
    frames = frames * povey_window(window, frames.dtype).to(frames.device)
    spectrum = torch.fft.rfft(frames, n=n_fft).abs().pow(2.0)  # [B, F, n_fft/2 + 1]
    banks = mel_banks(num_mel_bins, n_fft, sample_rate, low_freq, high_freq).to(spectrum)
    mel = spectrum @ banks.T
    return torch.clamp(mel, min=log_floor).log()


__all__ = ["fbank", "mel_banks", "mel_scale", "povey_window"]
