"""Decoding an uploaded query clip in blocks: float32 mono at the model's rate, never a whole-clip copy.

A 10-minute stereo 48 kHz upload decoded at once costs the stereo float array, its mono mix and the
resampled copy together (~350 MB); decoding `DECODE_BLOCK_FRAMES` frames at a time, mixing each block
to mono and feeding it to a streaming resampler keeps only the output (~38 MB at 16 kHz) plus one block.
"""
from __future__ import annotations

import io
import re
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from hade.data.audio import declared_frames
from hade.errors import InputError
from hade.serve.limits import DECODE_BLOCK_FRAMES, MAX_QUERY_SECONDS

# libsndfile names the file object it was given ("Error opening <_io.BytesIO object at 0x7f...>: ...");
# those reprs mean nothing to a user and leak server internals.
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def clean_reason(exc: BaseException) -> str:
    """One-line reason of a decoder exception, without Python object reprs."""
    text = _OBJECT_REPR.sub("the upload", str(exc))
    return " ".join(text.split())[:200] or type(exc).__name__


class _Output:
    """A growing float32 buffer, preallocated from the header's frame count (exact for WAV/FLAC)."""

    def __init__(self, expected: int, limit: int) -> None:
        self.data = np.empty(max(1, expected), dtype=np.float32)
        self.size = 0
        self.limit = limit

    def append(self, block: np.ndarray) -> None:
        end = self.size + block.shape[0]
        if end > self.limit:
            raise _TooLong()
        if end > self.data.shape[0]:  # header under-reported the length (e.g. MP3): grow geometrically
            grown = np.empty(min(self.limit, max(end, 2 * self.data.shape[0])), dtype=np.float32)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = block
        self.size = end

    def result(self) -> np.ndarray:
        if self.size == self.data.shape[0]:
            return self.data
        return self.data[:self.size].copy()  # a copy, so the over-allocated buffer is freed


class _TooLong(Exception):
    pass


def _mono(block: np.ndarray) -> np.ndarray:
    """[frames, channels] float32 -> [frames] float32 (channel mean), checked finite."""
    mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise InputError("the uploaded audio contains non-finite samples (NaN/Inf)")
    return mono


def _sf_blocks(f) -> Iterator[np.ndarray]:
    """[frames, channels] float32 blocks of an open soundfile.SoundFile."""
    while True:
        block = f.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            return
        yield block


def _decode(blocks: Iterable[np.ndarray], rate: int, frames: int, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Mix `blocks` ([frames, channels] float32 at `rate`; `frames` expected) to mono and resample them
    one at a time -> float32 mono [T] at `sample_rate`."""
    import soxr

    resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") \
        if rate != sample_rate else None
    expected = int(np.ceil(max(frames, 0) * sample_rate / rate)) + 16
    out = _Output(expected, limit=int(max_seconds * sample_rate) + 16)
    seen = 0
    for block in blocks:
        seen += block.shape[0]
        if seen > max_seconds * rate:
            raise _TooLong()
        mono = _mono(block)
        del block
        out.append(resampler.resample_chunk(mono) if resampler is not None else mono)
    if seen == 0:
        raise InputError("the uploaded audio contains no samples")
    if resampler is not None:
        out.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        if out.size == 0:
            raise InputError(f"the uploaded clip is too short to resample from {rate} Hz to {sample_rate} Hz")
    return out.result()


def _check_header(rate: int, channels: int, frames: int, max_seconds: float) -> int:
    """The header's frame count, 0 when it declares none (a WebM without Duration, a FLAC with unknown
    total samples: decoded to their end, the limit enforced while decoding); InputError when it says the
    clip is empty or too long."""
    if rate <= 0 or channels <= 0:
        raise InputError("the uploaded audio contains no samples")
    frames = declared_frames(frames) or 0
    if frames / rate > max_seconds:
        raise InputError(f"the uploaded clip is {frames / rate:.0f} s long; the limit is {max_seconds:.0f} s")
    return frames


def _decode_av(source: BinaryIO, container: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    from hade.data import av_audio

    if not av_audio.available():
        raise InputError(f"the uploaded file is a {container} container, which this server cannot decode "
                         "(PyAV is not installed); send WAV, FLAC, OGG or MP3")
    try:
        with av_audio.AudioStream(source, container) as stream:
            info = stream.info
            frames = _check_header(info.sample_rate, info.channels, info.frames, max_seconds)
            return _decode(stream.blocks(), info.sample_rate, frames, sample_rate, max_seconds)
    except av_audio.AvError as exc:
        raise InputError(f"the uploaded file is not audio that FFmpeg can decode ({clean_reason(exc)})") from None


def decode_upload(data: bytes | BinaryIO, sample_rate: int, max_seconds: float = MAX_QUERY_SECONDS) -> np.ndarray:
    """Decode an uploaded clip (bytes or a seekable binary file) -> float32 mono [T] at `sample_rate`.

    The container is recognised from its first bytes: MP4/M4A, ADTS AAC and Matroska/WebM go to FFmpeg
    (PyAV, told which demuxer to use: `hade.data.av_audio`), everything else to libsndfile. The duration is
    checked from the header before decoding, and again while decoding (headers can lie). Raises InputError
    with a user-facing reason for undecodable, empty, too long or non-finite audio.
    """
    import soundfile as sf

    from hade.data.av_audio import HEAD_BYTES, container_format

    source: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if isinstance(data, (bytes, bytearray, memoryview)) and not data:
        raise InputError("the uploaded file is empty")
    too_long = f"the uploaded clip is longer than {max_seconds:.0f} s"
    start = source.tell()
    container = container_format(source.read(HEAD_BYTES))
    source.seek(start)
    try:
        if container is not None:
            return np.ascontiguousarray(_decode_av(source, container, sample_rate, max_seconds), dtype=np.float32)
        with sf.SoundFile(source) as f:
            frames = _check_header(int(f.samplerate), int(f.channels), int(f.frames), max_seconds)
            wave = _decode(_sf_blocks(f), int(f.samplerate), frames, sample_rate, max_seconds)
            return np.ascontiguousarray(wave, dtype=np.float32)
    except InputError:
        raise
    except _TooLong:
        raise InputError(too_long) from None
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError ...
        raise InputError(f"the uploaded file is not audio that libsndfile can decode ({clean_reason(exc)}); "
                         "send WAV, FLAC, OGG, MP3, M4A/AAC or WebM") from None


__all__ = ["clean_reason", "decode_upload"]
