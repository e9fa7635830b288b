"""Audio in the FFmpeg containers libsndfile does not read (MP4/M4A/AAC, Matroska/WebM), through PyAV.

Phone recordings and podcasts are M4A, audio fetched from video sites is M4A or WebM: a library's folder
holds them beside WAV and FLAC. PyAV wraps FFmpeg's demuxers and decoders (its wheel carries FFmpeg), so
nothing is decoded by hand here; this module only chooses the demuxer and turns frames into float32.

Safety: FFmpeg guesses a file's format from its content unless told, and some formats it guesses (HLS
playlists, concat lists) make it open other files or URLs. So the container is recognised here from its
first bytes (`container_format`), FFmpeg is told which demuxer to use, and it reads through a Python file
object, never a path it could take for a URL. Anything else goes to libsndfile, which opens nothing else.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

import numpy as np

# File extensions routed here when PyAV is installed; the content still decides (`container_format`).
AV_EXTENSIONS: tuple[str, ...] = (".m4a", ".m4b", ".mp4", ".mov", ".aac", ".webm", ".mka", ".mkv")
HEAD_BYTES = 26  # enough for a FLAC STREAMINFO's total samples (bytes 21-25)
_FLAC_TOTAL_END = 8 + 18  # "fLaC", the block header (4), then 36 bits of total samples end STREAMINFO's byte 18
# ISO base media (MP4/M4A/MOV): a box type at offset 4; QuickTime files may start with other top boxes.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


class AvError(Exception):
    """A file FFmpeg cannot demux or decode; the message is a one-line reason."""


class StreamInfo(NamedTuple):
    """What a container says of its first audio stream (frames: an estimate from its duration)."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    codec: str


def available() -> bool:
    """Whether PyAV is installed, found without importing it: FFmpeg's libraries load only when such a file
    is decoded. Without it these containers are not read."""
    return importlib.util.find_spec("av") is not None


def container_format(head: bytes) -> str | None:
    """The FFmpeg demuxer for a file starting with `head` (its first `HEAD_BYTES` bytes), or None when the
    file is not MP4/MOV, Matroska/WebM or ADTS AAC (MP3 frames, whose layer bits are not 00, are not AAC),
    nor a FLAC stream of unknown length (its STREAMINFO's total samples 0, what an encoder writing to a
    pipe leaves: libsndfile takes it for 2^63 frames and cannot read it; FFmpeg decodes it to its end)."""
    if head[:4] == b"fLaC" and len(head) >= _FLAC_TOTAL_END and head[8 + 13] & 0x0F == 0 \
            and head[8 + 14:_FLAC_TOTAL_END] == b"\0\0\0\0" and head[4] & 0x7F == 0:  # STREAMINFO first
        return "flac"
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:  # ADTS sync word, layer 00
        return "aac"
    return None


def sniff(path: str | Path) -> str | None:
    """`container_format` of a file on disk (None when it cannot be read: the caller's decoder says why)."""
    try:
        with open(path, "rb") as f:
            return container_format(f.read(HEAD_BYTES))
    except OSError:
        return None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _open(source: BinaryIO, fmt: str):
    import av

    try:
        container = av.open(source, mode="r", format=fmt)
    except Exception as exc:  # av.error.FFmpegError subclasses, ValueError ...
        raise AvError(f"not a readable {fmt} container ({_reason(exc)})") from None
    if not container.streams.audio:
        container.close()
        raise AvError(f"the {fmt} container has no audio stream")
    return container


class AudioStream:
    """The first audio stream of a container, opened once: `info` from its headers, then `blocks()`
    decodes it. A context manager (closes the container); AvError when FFmpeg cannot read it."""

    def __init__(self, source: BinaryIO, fmt: str) -> None:
        self.fmt = fmt
        self._container = _open(source, fmt)
        try:
            stream = self._container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif self._container.duration is not None:
                seconds = self._container.duration / 1_000_000  # AV_TIME_BASE
            else:
                seconds = 0.0
            self.info = StreamInfo(rate, int(stream.codec_context.channels or 0), int(round(seconds * rate)), fmt,
                                   stream.codec_context.name)
        except Exception as exc:
            self._container.close()
            raise AvError(f"unreadable {fmt} stream header ({_reason(exc)})") from None
        self.rate = rate  # of the blocks: the header's, or the first frame's when the header has none

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()

    def blocks(self) -> Iterator[np.ndarray]:
        """[frames, channels] float32 per decoded frame at `rate`: every frame converted by FFmpeg's
        resampler to the header's rate (the first frame's when the header gives none) and to the first
        frame's channel layout, a no-op unless the stream differs from its header or changes midway."""
        import av

        resampler = None
        try:
            for frame in self._container.decode(self._container.streams.audio[0]):
                if resampler is None:
                    self.rate = self.rate or int(frame.sample_rate)
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.rate)
                for out in resampler.resample(frame):
                    yield np.ascontiguousarray(out.to_ndarray().T, dtype=np.float32)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield np.ascontiguousarray(out.to_ndarray().T, dtype=np.float32)
        except Exception as exc:  # a corrupt or truncated stream midway
            raise AvError(f"cannot decode its {self.fmt} audio ({_reason(exc)})") from None


def probe(source: BinaryIO, fmt: str) -> StreamInfo:
    """The first audio stream's rate, channels and estimated length, from the container's headers."""
    with AudioStream(source, fmt) as stream:
        return stream.info


def decode(source: BinaryIO, fmt: str) -> tuple[np.ndarray, int]:
    """The whole first audio stream as ([frames, channels] float32, sample rate)."""
    with AudioStream(source, fmt) as stream:
        parts = list(stream.blocks())
        rate = stream.rate
    if not parts:
        return np.zeros((0, 1), dtype=np.float32), rate
    return np.concatenate(parts, axis=0), rate


# kind -> (FFmpeg muxer, encoder) for `encode`
ENCODINGS: dict[str, tuple[str, str]] = {"m4a": ("ipod", "aac"), "aac": ("adts", "aac"), "webm": ("webm", "libopus")}


def encode(path: str | Path, wave: np.ndarray, sample_rate: int, kind: str = "m4a") -> Path:
    """Write `wave` ([T] or [T, C] float32, C <= 2) as `kind`: "m4a" (AAC in MP4), "aac" (ADTS) or "webm"
    (Opus; `sample_rate` one of Opus's, e.g. 48000), with FFmpeg's default bit rate. For test fixtures and
    benchmarks (the library only reads these containers)."""
    import av

    muxer, codec = ENCODINGS[kind]
    planar = np.ascontiguousarray(np.asarray(wave, dtype=np.float32).reshape(len(wave), -1).T)
    layout = {1: "mono", 2: "stereo"}[planar.shape[0]]
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        # the encoder takes frames of its own size and sample format
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=sample_rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for part in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(part):
                container.mux(packet)
    return Path(path)


__all__ = ["AV_EXTENSIONS", "ENCODINGS", "AudioStream", "AvError", "StreamInfo", "available", "container_format",
           "decode", "encode", "probe", "sniff"]
