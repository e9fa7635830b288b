"""MP4/M4A, ADTS AAC and Matroska/WebM through PyAV: recognised by content, decoded like any other file,
bad files named in the error, and FFmpeg never left to guess a format (a playlist is not followed)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from hade.data import av_audio
from hade.data.audio import AUDIO_EXTENSIONS, audio_info, load_audio
from hade.errors import AudioError

pytest.importorskip("av")

RATE = 44_100


def tone(seconds: float = 2.0, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, rate: int) -> float:
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(np.abs(np.fft.rfft(wave)))])


@pytest.mark.parametrize("kind, rate", [("m4a", RATE), ("aac", RATE), ("webm", 48_000)])
def test_decodes_to_the_same_sound(tmp_path, encode_av, kind, rate):
    path = encode_av(tmp_path / f"clip.{kind}", tone(rate=rate), rate, kind)
    wave = load_audio(path, 16_000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # lossy codecs add encoder delay and padding (at most ~2 frames), never lose the tone
    assert 32_000 <= wave.shape[0] <= 32_000 + 1_500
    assert abs(peak_hz(wave, 16_000) - 440) < 2
    assert np.sqrt(np.mean(wave[2_000:30_000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    info = audio_info(path)
    assert info.sample_rate == rate and info.channels == 1 and info.duration == pytest.approx(2.0, abs=0.1)
    assert info.format == av_audio.sniff(path).upper()


def test_channels_are_averaged(tmp_path, encode_av):
    left = tone()
    path = encode_av(tmp_path / "stereo.m4a", np.stack([left, np.zeros_like(left)], axis=1), RATE, "m4a")
    assert audio_info(path).channels == 2
    wave = load_audio(path, RATE)
    assert np.sqrt(np.mean(wave[5_000:80_000] ** 2)) == pytest.approx(0.3 / np.sqrt(2) / 2, rel=0.05)


def test_the_content_decides_not_the_name(tmp_path, encode_av):
    m4a = encode_av(tmp_path / "real.m4a", tone(), RATE, "m4a")
    disguised = tmp_path / "looks-like.wav"
    disguised.write_bytes(m4a.read_bytes())
    np.testing.assert_array_equal(load_audio(disguised, 16_000), load_audio(m4a, 16_000))
    sf.write(tmp_path / "pcm.m4a", tone(), RATE, format="WAV")  # a WAV named .m4a goes to libsndfile
    assert audio_info(tmp_path / "pcm.m4a").format == "WAV"


def test_container_format_by_magic():
    assert av_audio.container_format(b"\x00\x00\x00\x1cftypM4A ") == "mov"
    assert av_audio.container_format(b"\x00\x00\x01\x00moov\x00\x00") == "mov"
    assert av_audio.container_format(b"\x1a\x45\xdf\xa3\x9f") == "matroska"
    assert av_audio.container_format(b"\xff\xf1\x50\x40") == "aac"
    for other in (b"RIFF\x00\x00\x00\x00WAVE", b"fLaC\x00\x00", b"OggS\x00\x02", b"ID3\x04\x00", b"\xff\xfb\x90\x64",
                  b"#EXTM3U\n", b"ffconcat", b""):
        assert av_audio.container_format(other) is None, other
    assert {".m4a", ".aac", ".webm", ".mp4"} <= set(AUDIO_EXTENSIONS)


@pytest.mark.parametrize("content, reason", [
    (b"\x00\x00\x00\x1cftypM4A garbage" * 4, "unreadable or corrupt"),
    (b"", "unreadable or corrupt"),
])
def test_bad_files_are_named(tmp_path, content, reason):
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(content)
    for call in (lambda: load_audio(bad, 16_000), lambda: audio_info(bad)):
        with pytest.raises(AudioError, match=reason) as err:
            call()
        assert str(bad) in str(err.value)


def test_truncated_file_is_an_error(tmp_path, encode_av):
    whole = encode_av(tmp_path / "whole.m4a", tone(), RATE, "m4a").read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(whole[: len(whole) // 2])  # FFmpeg writes the index (moov) last: it is gone
    with pytest.raises(AudioError, match="cut.m4a"):
        load_audio(cut, 16_000)


def test_a_playlist_is_not_followed(tmp_path, encode_av):
    """An HLS playlist pointing at another local file: FFmpeg left to probe the format reads that file (the
    precondition below); here FFmpeg is never given the playlist, and libsndfile rejects it."""
    import av

    segment = encode_av(tmp_path / "elsewhere.aac", tone(), RATE, "aac")
    for name in ("playlist.m3u8", "playlist.m4a"):
        playlist = tmp_path / name
        playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{segment}\n#EXT-X-ENDLIST\n")
        with pytest.raises(AudioError, match=name):
            load_audio(playlist, 16_000)
    with av.open(str(tmp_path / "playlist.m3u8")) as probed:  # what FFmpeg does when it guesses
        assert probed.format.name == "hls" and sum(f.samples for f in probed.decode(audio=0)) > RATE


def test_video_without_sound(tmp_path):
    import av

    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path, 16_000)


def test_without_pyav_the_error_says_what_to_install(tmp_path, encode_av, monkeypatch):
    path = encode_av(tmp_path / "clip.m4a", tone(0.5), RATE, "m4a")
    monkeypatch.setattr(av_audio, "available", lambda: False)
    with pytest.raises(AudioError, match="pip install av"):
        load_audio(path, 16_000)
