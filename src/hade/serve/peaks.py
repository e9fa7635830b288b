"""Waveform envelopes for the page's thumbnails: (min, max) pairs of an indexed file, computed once per file.

The file is the one `Index.open_audio` opened and verified (inside the indexed folder, same size and mtime
as indexed), read block by block: FFmpeg containers through `hade.data.av_audio`, the rest through
libsndfile, at the file's own rate (an envelope needs no resampling) and down-mixed to mono. Only fine
per-chunk extremes are kept while decoding, so an hour-long file costs a few MB, not its samples.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO, Hashable, Iterator

import numpy as np

from hade.errors import InputError
from hade.serve.limits import DECODE_BLOCK_FRAMES, PEAK_BUCKETS, PEAK_CACHE_FILES
from hade.serve.upload import clean_reason

FINE_PER_BUCKET = 8  # fine chunks per output bucket: buckets then cover equal spans to within 1/8


@dataclass(frozen=True)
class Peaks:
    """Envelope of one file: `mins`/`maxs` [B] float32 in [-1, 1] of B equal spans covering `duration` s."""

    duration: float
    mins: np.ndarray
    maxs: np.ndarray


def _blocks(f: BinaryIO) -> tuple[Iterator[np.ndarray], int, int, object]:
    """(blocks [frames, channels] float32, sample rate, expected frames, closer) of an open audio file."""
    import soundfile as sf

    from hade.data import av_audio

    head = f.read(av_audio.HEAD_BYTES)
    f.seek(0)
    container = av_audio.container_format(head)
    if container is not None:
        stream = av_audio.AudioStream(f, container)
        return stream.blocks(), int(stream.info.sample_rate), int(stream.info.frames), stream.__exit__
    sfile = sf.SoundFile(f)

    def blocks() -> Iterator[np.ndarray]:
        while True:
            block = sfile.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                return
            yield block

    return blocks(), int(sfile.samplerate), int(sfile.frames), lambda *_: sfile.close()


def compute_peaks(f: BinaryIO, buckets: int = PEAK_BUCKETS) -> Peaks:
    """The envelope of an open audio file in `buckets` (min, max) pairs (fewer for a file with fewer
    samples). InputError when it cannot be decoded."""
    try:
        blocks, rate, frames, close = _blocks(f)
    except Exception as exc:  # libsndfile / FFmpeg: unreadable header
        raise InputError(f"cannot decode the file for its waveform ({clean_reason(exc)})") from None
    fine = max(1, frames // (buckets * FINE_PER_BUCKET)) if frames > 0 else 1024
    mins: list[np.ndarray] = []
    maxs: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    seen = 0
    try:
        for block in blocks:
            mono = np.concatenate([carry, block.mean(axis=1, dtype=np.float32)])
            seen += block.shape[0]
            whole = mono.shape[0] // fine * fine
            if whole:
                grid = np.nan_to_num(mono[:whole]).reshape(-1, fine)
                mins.append(grid.min(1))
                maxs.append(grid.max(1))
            carry = mono[whole:]
    except Exception as exc:  # a corrupt stream midway
        raise InputError(f"cannot decode the file for its waveform ({clean_reason(exc)})") from None
    finally:
        close(None, None, None)
    if carry.shape[0]:
        mins.append(np.nan_to_num(carry).min(keepdims=True))
        maxs.append(np.nan_to_num(carry).max(keepdims=True))
    lo = np.concatenate(mins) if mins else np.zeros(0, np.float32)
    hi = np.concatenate(maxs) if maxs else np.zeros(0, np.float32)
    groups = np.array_split(np.arange(lo.shape[0]), min(buckets, lo.shape[0])) if lo.shape[0] else []
    out_lo = np.array([lo[g].min() for g in groups], dtype=np.float32)
    out_hi = np.array([hi[g].max() for g in groups], dtype=np.float32)
    return Peaks(seen / rate if rate > 0 else 0.0, np.clip(out_lo, -1, 1), np.clip(out_hi, -1, 1))


class PeakCache:
    """Envelopes by file key (path, size, mtime), least recently used dropped beyond `max_files`."""

    def __init__(self, max_files: int = PEAK_CACHE_FILES) -> None:
        self.max_files = max_files
        self._items: OrderedDict[Hashable, Peaks] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # envelopes decoded so far (tests check the cache is used)

    def get(self, key: Hashable) -> Peaks | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: Hashable, peaks: Peaks) -> None:
        with self._lock:
            self.computed += 1
            self._items[key] = peaks
            while len(self._items) > self.max_files:
                self._items.popitem(last=False)


__all__ = ["PeakCache", "Peaks", "compute_peaks"]
