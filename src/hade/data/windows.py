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


class StreamWindows:
    """The windows of `window_bounds` cut from a stream of sample blocks as they arrive (`hade index`
    decoding a long file block by block): `feed` returns the windows complete so far, `finish` the rest
    once the stream's length is known. Only the samples a window still needs are kept (at most about
    `window` plus one block), so memory does not grow with the stream's length."""

    def __init__(self, window: int, hop: int) -> None:
        self.window, self.hop = window, hop
        self.total = 0  # samples fed so far
        self.next_start = 0  # of the next window of the grid
        self.emitted: list[tuple[int, int]] = []
        self._buf = np.zeros(0, dtype=np.float32)  # samples [self._buf_start, self.total)
        self._buf_start = 0

    def _cut(self, start: int, end: int) -> np.ndarray:
        return self._buf[start - self._buf_start:end - self._buf_start].copy()

    def feed(self, block: np.ndarray) -> list[tuple[tuple[int, int], np.ndarray]]:
        """((start, end), samples) of the grid windows that `block` completes."""
        self._buf = np.concatenate([self._buf, np.asarray(block, dtype=np.float32)])
        self.total += len(block)
        out = []
        while self.next_start + self.window <= self.total:
            bounds = (self.next_start, self.next_start + self.window)
            out.append((bounds, self._cut(*bounds)))
            self.next_start += self.hop
        keep_from = max(self._buf_start, min(self.next_start, self.total - self.window))
        self._buf, self._buf_start = self._buf[keep_from - self._buf_start:], keep_from
        self.emitted += [b for b, _ in out]
        return out

    def finish(self) -> list[tuple[tuple[int, int], np.ndarray]]:
        """The last windows: the one ending exactly at the end when the grid leaves a tail, or the whole
        stream as one window when it is not longer than `window`. Afterwards `emitted` equals
        `window_bounds(total, window, hop)`."""
        if not self.emitted:  # shorter than a window
            out = [((0, self.total), self._cut(0, self.total))]
        elif self.emitted[-1][1] < self.total:
            out = [((self.total - self.window, self.total), self._cut(self.total - self.window, self.total))]
        else:
            out = []
        self.emitted += [b for b, _ in out]
        return out


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
