"""Audio IO, wrapped once: decode to float32 mono at a target rate, crop/pad, cheap header checks.

Every failure is an :class:`~hade.errors.AudioError` whose message names the file and what was
expected, so a reader or a batch job can record it as a ``Problem`` and carry on.

Files in MP4/M4A, ADTS AAC or Matroska/WebM containers (recognised by their first bytes, whatever their
name) are decoded by FFmpeg through PyAV (:mod:`hade.data.av_audio`); everything else by libsndfile.

The virtual path of a clip of a packed set (``<split>/shard-00000.pcm16/<row>/<name>``,
:mod:`hade.data.packed`) reads from its shard instead of a file: every caller of :func:`load_audio` and
:func:`audio_info` reads packed sets unchanged.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from hade.data import av_audio
from hade.data.packed.shards import PackedRef, packed_frames, packed_ref, read_packed
from hade.errors import AudioError, InputError

# File extensions of the container formats libsndfile reads (only those this build supports).
_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "WAV": (".wav",),
    "WAVEX": (".wav",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",),
    "AIFF": (".aiff", ".aif", ".aifc"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
    "W64": (".w64",),
    "RF64": (".rf64",),
}


def _supported_extensions() -> tuple[str, ...]:
    try:
        available = set(sf.available_formats())
    except Exception:  # pragma: no cover - very old soundfile
        available = {"WAV", "FLAC", "OGG"}
    out: list[str] = []
    for fmt, exts in _FORMAT_EXTENSIONS.items():
        if fmt in available:
            out.extend(e for e in exts if e not in out)
    if av_audio.available():
        out.extend(e for e in av_audio.AV_EXTENSIONS if e not in out)
    return tuple(out)


AUDIO_EXTENSIONS: tuple[str, ...] = _supported_extensions()
"""Lower-case file extensions (with the dot) that :func:`load_audio` can decode."""

ID_SUFFIXES: tuple[str, ...] = tuple(
    e for e in (".wav", ".flac", ".m4a", ".webm", ".opus", ".ogg", ".mp3") if e in AUDIO_EXTENSIONS)
"""Extensions tried, in this order, where a layout names a clip by its id alone (AudioCaps' YouTube ids,
WavCaps' ids): the formats such sets are stored in, and those YouTube downloads come in."""

FIT_MODES = ("start", "center", "random")
PAD_MODES = ("zeros", "repeat")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples decoded)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0

    def num_samples_at(self, sample_rate: int) -> int:
        """Approximate length after resampling to ``sample_rate``."""
        if self.sample_rate <= 0:
            return 0
        return int(round(self.frames * sample_rate / self.sample_rate))


UNKNOWN_LENGTH = 1 << 62  # frame counts from here up mean "not declared" (libsndfile: SF_COUNT_MAX)


def declared_frames(frames: int) -> int | None:
    """A header's frame count, or None when the header declares no length: 0 from a container without a
    duration (a WebM written to a pipe, a browser recording) or libsndfile's SF_COUNT_MAX for a FLAC whose
    STREAMINFO has total samples 0. Such streams are decoded to their end to learn their length."""
    return int(frames) if 0 < frames < UNKNOWN_LENGTH else None


def _expected() -> str:
    return "expected a non-empty audio file (" + ", ".join(AUDIO_EXTENSIONS) + ")"


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _sf_reason(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return f"unreadable or corrupt ({msg})"


def audio_problem(path: str | Path) -> str | None:
    """Cheap header check. Returns why ``path`` is unusable, or None when the header looks fine."""
    try:
        audio_info(path)
    except AudioError as exc:
        return getattr(exc, "reason", str(exc))
    return None


def _audio_error(path: Path, reason: str) -> AudioError:
    err = AudioError(f"audio file {path}: {reason}; {_expected()}")
    err.path = path  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


@contextlib.contextmanager
def _sf_source(path: Path) -> Iterator[str | BinaryIO]:
    """What libsndfile opens: the path, or the open file when its name is not UTF-8 (soundfile encodes a
    path as UTF-8, which a Latin-1 name with surrogate escapes, ``n\\udce4me.wav``, cannot be)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        with open(path, "rb") as f:
            yield f
        return
    yield name


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise _audio_error(p, "file not found")
    if not p.is_file():
        raise _audio_error(p, "not a regular file")
    return p


def _packed_info(path: Path, ref: PackedRef) -> AudioInfo:
    frames, rate = packed_frames(ref)
    if frames <= 0:
        raise _audio_error(path, "contains 0 samples")
    return AudioInfo(path=path, sample_rate=rate, channels=1, frames=frames, format="HADE-PACKED", subtype="PCM_16")


def audio_info(path: str | Path) -> AudioInfo:
    """Read only the header of ``path``; raise AudioError if missing, unreadable or empty."""
    ref = packed_ref(path)
    if ref is not None:
        return _packed_info(Path(path), ref)
    p = _existing_file(path)
    container = av_audio.sniff(p)
    if container is not None:
        return _av_info(p, container)
    try:
        with _sf_source(p) as source:
            info = sf.info(source)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError...
        raise _audio_error(p, _sf_reason(exc)) from None
    if info.samplerate <= 0:
        raise _audio_error(p, f"invalid sample rate {info.samplerate} in header")
    if info.frames <= 0:
        raise _audio_error(p, "contains 0 samples")
    return AudioInfo(
        path=p,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _needs_av(path: Path, container: str) -> None:
    if not av_audio.available():
        raise _audio_error(path, f"a {container} container, which needs PyAV (pip install av)")


def _av_info(path: Path, container: str) -> AudioInfo:
    """Header facts from the container; `frames` is estimated from its duration (exact after decoding)."""
    _needs_av(path, container)
    try:
        with open(path, "rb") as f:
            info = av_audio.probe(f, container)
            if declared_frames(info.frames) is None:  # no length in the header: decode to the end to learn it
                f.seek(0)
                with av_audio.AudioStream(f, container) as stream:
                    frames = sum(block.shape[0] for block in stream.blocks())
                    info = info._replace(frames=frames, sample_rate=stream.rate)
    except (OSError, av_audio.AvError) as exc:
        raise _audio_error(path, f"unreadable or corrupt ({exc})") from None
    if info.sample_rate <= 0:
        raise _audio_error(path, f"invalid sample rate {info.sample_rate} in its {container} audio stream")
    if info.frames <= 0:
        raise _audio_error(path, "contains 0 samples")
    return AudioInfo(path=path, sample_rate=info.sample_rate, channels=info.channels, frames=info.frames,
                     format=container.upper(), subtype=info.codec.upper())


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(float32 mono waveform [T], its sample rate) of an audio file: channels averaged."""
    container = av_audio.sniff(path)
    try:
        if container is not None:
            _needs_av(path, container)
            with open(path, "rb") as f:
                data, sr = av_audio.decode(f, container)
        else:
            with _sf_source(path) as source:
                data, sr = sf.read(source, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # LibsndfileError, AvError, OSError ...
        raise _audio_error(path, _sf_reason(exc)) from None
    if data.shape[1] == 0:
        return np.zeros(0, dtype=np.float32), int(sr)
    return (data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)), int(sr)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to a float32 mono waveform [T] at ``sample_rate``.

    Channels are averaged; the rate is converted with soxr (HQ) when it differs. Raises AudioError
    (naming the file) for a missing, unreadable/corrupt, empty or non-finite (NaN/Inf) file.
    Silence is accepted. A packed clip's virtual path reads its shard (no decoding).
    """
    target = _check_rate(sample_rate)
    ref = packed_ref(path)
    if ref is not None:
        p = Path(path)
        wave, sr = read_packed(ref)
    else:
        p = _existing_file(path)
        wave, sr = _decode(p)
    if wave.shape[0] == 0:
        raise _audio_error(p, "contains 0 samples")
    finite = np.isfinite(wave)
    if not finite.all():
        bad = int((~finite).sum())
        raise _audio_error(p, f"contains {bad} non-finite sample(s) (NaN/Inf) of {wave.shape[0]}")
    if int(sr) != target:
        wave = soxr.resample(wave, int(sr), target, quality="HQ")
        if wave.shape[0] == 0:
            raise _audio_error(p, f"too short to resample from {sr} Hz to {target} Hz (0 samples left)")
    return np.ascontiguousarray(wave, dtype=np.float32)


STREAM_BLOCK_FRAMES = 1 << 16  # frames libsndfile reads at a time in `stream_audio` (1.4 s at 48 kHz)


def stream_audio(path: str | Path, sample_rate: int) -> Iterator[np.ndarray]:
    """``path`` decoded block by block: float32 mono blocks [t] at ``sample_rate`` whose concatenation is the
    file (as `load_audio` gives it, up to the resampler's rounding). Each block is mixed to mono and fed to
    a streaming resampler before the next is read, so memory does not grow with the file's length (a whole
    1-hour file decoded at once took `hade index` to 3.3 GB). AudioError naming the file, like
    `load_audio`: missing, unreadable, corrupt midway, empty, non-finite. A packed clip is one block."""
    target = _check_rate(sample_rate)
    if packed_ref(path) is not None:
        yield load_audio(path, sample_rate)
        return
    p = _existing_file(path)
    container = av_audio.sniff(p)
    if container is not None:
        _needs_av(p, container)
    produced, resampler = 0, None
    try:
        with contextlib.ExitStack() as stack:
            blocks, rate_of = _native_blocks(p, container, stack)
            for block in blocks:
                mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                if not np.isfinite(mono).all():
                    raise _audio_error(p, "contains non-finite sample(s) (NaN/Inf)")
                if resampler is None and rate_of() != target:
                    resampler = soxr.ResampleStream(rate_of(), target, 1, dtype="float32", quality="HQ")
                out = resampler.resample_chunk(mono) if resampler is not None else mono
                if len(out):
                    produced += len(out)
                    yield np.ascontiguousarray(out, dtype=np.float32)
            if resampler is not None and len(out := resampler.resample_chunk(np.zeros(0, np.float32), last=True)):
                produced += len(out)
                yield out
    except AudioError:
        raise
    except Exception as exc:  # LibsndfileError, AvError, OSError ...
        raise _audio_error(p, _sf_reason(exc)) from None
    if produced == 0:
        raise _audio_error(p, "contains 0 samples")


def _native_blocks(path: Path, container: str | None, stack: contextlib.ExitStack):
    """([frames, channels] float32 blocks at the file's rate, a function giving that rate once the first
    block is out) of an open file; `stack` closes it."""
    if container is not None:
        stream = stack.enter_context(av_audio.AudioStream(stack.enter_context(open(path, "rb")), container))
        return stream.blocks(), lambda: stream.rate
    f = stack.enter_context(sf.SoundFile(stack.enter_context(_sf_source(path))))
    rate = int(f.samplerate)

    def blocks() -> Iterator[np.ndarray]:
        while (block := f.read(STREAM_BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
            yield block

    return blocks(), lambda: rate


def fit_length(
    wave: np.ndarray,
    num_samples: int,
    mode: str = "start",
    rng: np.random.Generator | None = None,
    pad: str = "zeros",
) -> np.ndarray:
    """Crop or pad (on the right) ``wave`` [T] to exactly ``num_samples``.

    mode: "start" (keep the beginning) and "center" are deterministic (evaluation); "random" picks a
    uniformly random crop offset with ``rng`` (training; required).
    pad: "zeros" appends silence; "repeat" first repeats the whole clip as often as it fits, then appends
    silence (LAION-CLAP's and transformers' ``ClapFeatureExtractor``'s ``padding="repeatpad"``).
    """
    if pad not in PAD_MODES:
        raise InputError(f"fit_length pad must be one of {', '.join(PAD_MODES)}; got {pad!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise InputError(f"num_samples must be a positive integer, got {num_samples!r}")
    if mode not in FIT_MODES:
        raise InputError(f"fit_length mode must be one of {', '.join(FIT_MODES)}; got {mode!r}")
    if mode == "random" and rng is None:
        raise InputError("fit_length(mode='random') needs rng (a numpy Generator); use 'start' or 'center' for evaluation")
    w = np.asarray(wave, dtype=np.float32)
    if w.ndim != 1:
        raise InputError(f"fit_length expects a 1-D waveform [T], got shape {tuple(w.shape)}")
    n = int(num_samples)
    t = w.shape[0]
    if t == n:
        return w
    if t > n:
        excess = t - n
        if mode == "start":
            offset = 0
        elif mode == "center":
            offset = excess // 2
        else:
            offset = int(rng.integers(0, excess + 1))  # type: ignore[union-attr]
        return np.ascontiguousarray(w[offset : offset + n])
    if pad == "repeat" and t > 0:
        w = np.tile(w, n // t)
    out = np.zeros(n, dtype=np.float32)
    out[:w.shape[0]] = w
    return out


__all__ = [
    "AUDIO_EXTENSIONS",
    "ID_SUFFIXES",
    "FIT_MODES",
    "PAD_MODES",
    "AudioInfo",
    "audio_info",
    "audio_problem",
    "fit_length",
    "load_audio",
    "stream_audio",
]
