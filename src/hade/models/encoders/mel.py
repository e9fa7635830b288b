"""Log-mel front end of the HTSAT audio encoder.

Numerically this follows the torchlibrosa ``Spectrogram`` + ``LogmelFilterBank`` pair used by HTS-AT:
centered STFT with reflect padding and a periodic Hann window, power spectrogram, a Slaney-style mel
filterbank (identical to ``librosa.filters.mel(htk=False, norm="slaney")``) and ``10*log10(max(x, 1e-10))``
with ``ref=1.0`` and no ``top_db`` clamp.

The filterbank is written out by hand here because neither torchaudio nor librosa is a dependency of
hade. All constant tensors (window, filterbank) are *non-persistent* buffers: they are recomputed from
the constructor arguments and never stored in or loaded from a state_dict (HTS-AT checkpoints carry
torchlibrosa STFT/mel weights which a loader simply drops).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Slaney mel scale constants (Auditory Toolbox / librosa with htk=False): linear below 1 kHz,
# logarithmic above it.
_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # = 15 mel
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(freq: torch.Tensor) -> torch.Tensor:
    """Hz -> Slaney mel (elementwise, float64 recommended)."""
    linear = freq / _F_SP
    log_part = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Slaney mel -> Hz (inverse of :func:`hz_to_mel_slaney`)."""
    linear = mel * _F_SP
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, linear)


def mel_center_frequencies(n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """The ``n_mels + 2`` band edges (Hz) of the filterbank, equally spaced on the Slaney mel scale.

    Filter ``m`` rises from edge ``m``, peaks at edge ``m + 1`` and falls to zero at edge ``m + 2``.
    """
    lo = hz_to_mel_slaney(torch.tensor(float(fmin), dtype=torch.float64))
    hi = hz_to_mel_slaney(torch.tensor(float(fmax), dtype=torch.float64))
    return mel_to_hz_slaney(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))


def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None = None
) -> torch.Tensor:
    """Triangular mel filterbank ``[n_mels, n_fft // 2 + 1]`` (float64), slaney area-normalised.

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")``.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(
            f"mel filterbank needs 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}, "
            f"sample_rate={sample_rate}"
        )
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_center_frequencies(n_mels, fmin, fmax)  # [n_mels + 2]
    widths = edges[1:] - edges[:-1]  # [n_mels + 1]
    # dist[i, k] = edges[i] - fft_freqs[k]
    dist = edges[:, None] - fft_freqs[None, :]
    rising = -dist[:-2] / widths[:-1, None]  # (f - left) / (center - left)
    falling = dist[2:] / widths[1:, None]  # (right - f) / (right - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Slaney normalisation: every triangle gets unit area in Hz (height 2 / bandwidth).
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


class LogMel(nn.Module):
    """Waveform ``[B, T_samples]`` -> log-mel power spectrogram ``[B, 1, T_frames, n_mels]`` (dB).

    ``T_frames = 1 + T_samples // hop_length`` (centered STFT). The input must be longer than
    ``n_fft // 2`` samples (reflect padding).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        fmin: float,
        fmax: float | None,
        amin: float = 1e-10,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.win_length = int(win_length)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = float(fmax) if fmax is not None else sample_rate / 2.0
        self.amin = float(amin)
        window = torch.hann_window(self.win_length, periodic=True, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        melfb = slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, self.fmax)
        # stored transposed for a right-multiplication: [n_freq, n_mels]
        self.register_buffer("mel_fb", melfb.t().contiguous().to(torch.float32), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for an input of ``num_samples`` samples."""
        return 1 + int(num_samples) // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects a [batch, samples] waveform, got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveform has {waveform.shape[-1]} samples; at least {self.n_fft // 2 + 1} are needed "
                f"(n_fft={self.n_fft}, reflect padding)"
            )
        x = waveform.to(self.window.dtype)
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, n_freq, T_frames]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # [B, T_frames, n_mels]
        logmel = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        return logmel.unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, fmin={self.fmin}, fmax={self.fmax}"
        )
