"""The signal toolbox of the SynthCaps event synthesisers (hade.data.synthcaps.events): the context a
synthesis function gets (`Ctx`), tones, band-passed noise, envelopes and grain scattering, in numpy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Ctx:
    """What a synthesis function gets: length, rate, generator and the pitch / repetition factors."""

    n: int
    sr: int
    rng: np.random.Generator
    pitch: float = 1.0
    rate: float = 1.0

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.n) / self.sr


def lim(sr: int, f: float | np.ndarray) -> float | np.ndarray:
    return np.minimum(f, 0.45 * sr)


def tone(freq: float | np.ndarray, c: Ctx) -> np.ndarray:
    """Sine with (possibly time-varying) frequency in Hz, clamped below Nyquist."""
    f = np.broadcast_to(lim(c.sr, np.asarray(freq, dtype=float)), (c.n,))
    return np.sin(2 * np.pi * np.cumsum(f) / c.sr)


def harmonic(f0: float | np.ndarray, amps: list[float] | np.ndarray, c: Ctx, n: int | None = None) -> np.ndarray:
    """Additive harmonic tone; partials above 0.45*sr are dropped sample by sample."""
    n = c.n if n is None else n
    f = np.broadcast_to(np.asarray(f0, dtype=float), (n,))
    phase = 2 * np.pi * np.cumsum(f) / c.sr
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        out += a * np.sin(k * phase) * (k * f < 0.45 * c.sr)
    return out


def band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-pass by an FFT mask with smooth (4th-order-like) skirts."""
    f = np.fft.rfftfreq(len(x), 1 / sr)
    hi = float(lim(sr, hi))
    lo = min(lo, 0.7 * hi)
    mask = 1 / (1 + (lo / np.maximum(f, 1e-3)) ** 4) / (1 + (f / hi) ** 4)
    return np.fft.irfft(np.fft.rfft(x) * mask, len(x))


def formants(x: np.ndarray, sr: int, freqs: tuple[float, ...], bw: float = 120.0) -> np.ndarray:
    """Shape a source with Gaussian formant peaks (FFT domain)."""
    f = np.fft.rfftfreq(len(x), 1 / sr)
    mask = 0.02 + sum(np.exp(-0.5 * ((f - fc) / (bw * (1 + i))) ** 2) / (1 + i) for i, fc in enumerate(freqs))
    return np.fft.irfft(np.fft.rfft(x) * mask, len(x))


def noise(c: Ctx, lo: float, hi: float, n: int | None = None) -> np.ndarray:
    return band(c.rng.standard_normal(c.n if n is None else n), c.sr, lo, hi)


def decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (sr * tau))


def ar(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack / release envelope."""
    env = np.ones(n)
    a, r = min(int(attack * sr), n // 2), min(int(release * sr), n // 2)
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[n - r:] = np.minimum(env[n - r:], np.linspace(1, 0, r))
    return env


def lfo(c: Ctx, rate: float, lo: float, hi: float) -> np.ndarray:
    """Smooth random control signal between lo and hi changing about `rate` times a second."""
    k = int(c.n / c.sr * rate) + 3
    pts = c.rng.uniform(lo, hi, size=k)
    x = np.linspace(0, k - 1, c.n)
    i = np.minimum(x.astype(int), k - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (x - i))
    return pts[i] * (1 - w) + pts[i + 1] * w


def scatter(n: int, onsets: np.ndarray, make: Callable[[int], np.ndarray], sr: int) -> np.ndarray:
    """Sum grains: make(i) returns grain i, placed at onsets[i] seconds."""
    out = np.zeros(n)
    for i, t in enumerate(onsets):
        s = int(t * sr)
        if s >= n:
            break
        g = make(i)[: n - s]
        out[s:s + len(g)] += g
    return out


def periodic(c: Ctx, rate: float, jitter: float = 0.0) -> np.ndarray:
    """Onset times at `rate` per second (times the repetition factor) with relative jitter."""
    period = 1.0 / (rate * c.rate)
    k = int(c.n / c.sr / period) + 1
    return np.maximum(0.0, np.arange(k) * period + c.rng.uniform(-jitter, jitter, k) * period)


def poisson(c: Ctx, rate: float) -> np.ndarray:
    k = c.rng.poisson(rate * c.rate * c.n / c.sr) + 1
    return np.sort(c.rng.uniform(0, c.n / c.sr, k))
