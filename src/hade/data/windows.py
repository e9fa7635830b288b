"""Cutting a waveform into the windows a model encodes: the window grid, the default window and hop of a
model, and the zero-padded batches. Shared by the search index (`hade index`), zero-shot classification and
`RetrievalModel.embed_audio`, so that all three cut and pad a file the same way."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from hade.errors import InputError

MAX_DEFAULT_WINDOW = 10.0


def window_bounds(num_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the windows of a file: starts 0, hop, 2·hop, ... while the window
    fits, plus one ending exactly at the end when the grid leaves a tail; one window [0, n) for a file no
    longer than `window` (zero-padded when encoded)."""
    if num_samples <= window:
        return [(0, num_samples)]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return [(s, s + window) for s in starts]


def resolve_window(model_sample_rate: int, max_samples: int, window: float | None,
                   hop: float | None, clip_samples: int | None = None) -> tuple[int, int]:
    """Window and hop in samples: window defaults to the model's clip length (`clip_samples`, the length it
    was trained on, else `max_samples`) capped to 10 s; hop to half the window."""
    if window is None:
        w = min(clip_samples or max_samples, max_samples, int(round(MAX_DEFAULT_WINDOW * model_sample_rate)))
    else:
        w = int(round(float(window) * model_sample_rate))
        if w > max_samples:
            raise InputError(f"--window {window} s is longer than the model's clip length "
                             f"{max_samples / model_sample_rate:.3f} s; use a shorter window")
        if w <= 0:
            raise InputError(f"--window must be positive, got {window}")
    h = max(1, w // 2) if hop is None else int(round(float(hop) * model_sample_rate))
    if h <= 0:
        raise InputError(f"--hop must be positive, got {hop}")
    return w, h


def window_batch(pieces: Sequence[np.ndarray], window: int) -> np.ndarray:
    """The encoder's input for waveform pieces of at most `window` samples each: [B, window] float32, each
    piece at the start of its row and zero-padded (a file shorter than a window)."""
    batch = np.zeros((len(pieces), window), dtype=np.float32)
    for i, piece in enumerate(pieces):
        batch[i, :len(piece)] = piece
    return batch


def window_batches(wave: np.ndarray, bounds: Sequence[tuple[int, int]], window: int,
                   batch_size: int) -> Iterator[np.ndarray]:
    """`window_batch`es [<=batch_size, window] of the windows `bounds` of one waveform, in order."""
    for a in range(0, len(bounds), batch_size):
        yield window_batch([wave[s:e] for s, e in bounds[a:a + batch_size]], window)
