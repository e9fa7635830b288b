"""Streams whose header declares no length — a WebM without a Duration element (what `ffmpeg -f webm
pipe:` and browser recorders write) and a FLAC whose STREAMINFO has total samples 0 — are decoded to their
end: by `hade index` and training (load_audio, audio_info / audio_problem, which readers, pack and
training use to skip files) and by uploads, with the duration limit enforced while decoding."""
from __future__ import annotations

import io

import numpy as np
import pytest

from hade.data.audio import audio_info, audio_problem, load_audio
from hade.errors import InputError
from hade.serve.upload import decode_upload

SECONDS = 3.0


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink: a muxer cannot go back to write the length, as on a pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def webm_without_duration(seconds: float = SECONDS, sr: int = 48000) -> bytes:
    av = pytest.importorskip("av")
    wave = (0.1 * np.sin(np.arange(int(seconds * sr)) * 2 * np.pi * 440 / sr)).astype(np.float32)
    pipe = _Pipe()
    with av.open(pipe, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=sr,
                                      frame_size=stream.codec_context.frame_size)
        for part in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(part):
                container.mux(packet)
    data = bytes(pipe.data)
    assert b"\x44\x89" not in data[:200]  # no Duration element in the segment info
    return data


def flac_without_total_samples(seconds: float = SECONDS, sr: int = 8000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.random.default_rng(0).standard_normal(int(seconds * sr)).astype(np.float32), sr,
             format="FLAC")
    data = bytearray(buf.getvalue())
    data[8 + 13] &= 0xF0  # STREAMINFO's 36-bit total samples (after "fLaC" and the block header) set to 0
    data[8 + 14:8 + 18] = b"\0\0\0\0"
    return bytes(data)


@pytest.fixture(params=["webm", "flac"])
def unknown_length(request, tmp_path):
    make = webm_without_duration if request.param == "webm" else flac_without_total_samples
    path = tmp_path / f"clip.{request.param}"
    path.write_bytes(make())
    return path


def test_files_without_a_declared_length_are_read_to_their_end(unknown_length):
    assert audio_problem(unknown_length) is None
    info = audio_info(unknown_length)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    wave = load_audio(unknown_length, 16000)
    assert len(wave) == pytest.approx(SECONDS * 16000, abs=0.05 * 16000) and np.abs(wave).max() > 0.01


def test_uploads_without_a_declared_length_are_decoded_with_the_limit_enforced(unknown_length):
    data = unknown_length.read_bytes()
    wave = decode_upload(data, 16000)
    assert len(wave) == pytest.approx(SECONDS * 16000, abs=0.05 * 16000)
    with pytest.raises(InputError, match="longer than 1 s"):
        decode_upload(data, 16000, max_seconds=1.0)
