from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hade.data.audio import AUDIO_EXTENSIONS, audio_info, audio_problem, fit_length, load_audio
from hade.errors import AudioError, InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _write(path: Path, data: np.ndarray, sr: int, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def test_extensions_cover_common_formats():
    for ext in (".wav", ".flac", ".ogg"):
        assert ext in AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_load_fixture_wav_and_flac():
    wav = load_audio(FIXTURES / "clotho" / "development" / "birds.wav", 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1 and wav.shape[0] == 8000
    flac = load_audio(FIXTURES / "audiocaps" / "train" / "ghi789rst-2.flac", 16000)
    assert flac.shape == (8000,) and np.abs(flac).max() > 0.1


def test_resample_odd_rate(tmp_path):
    sr = 11025
    t = np.arange(sr) / sr  # 1 s
    path = _write(tmp_path / "odd.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    wav = load_audio(path, 16000)
    assert wav.dtype == np.float32
    assert abs(wav.shape[0] - 16000) <= 1
    # energy preserved by a good resampler (sine RMS = 0.5/sqrt(2))
    assert np.sqrt(np.mean(wav[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    down = load_audio(path, 8000)
    assert abs(down.shape[0] - 8000) <= 1


def test_multichannel_downmixed_to_mean(tmp_path):
    left = np.full(1000, 0.2, dtype=np.float32)
    right = np.full(1000, -0.6, dtype=np.float32)
    path = _write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000)
    wav = load_audio(path, 16000)
    assert wav.shape == (1000,)
    np.testing.assert_allclose(wav, -0.2, atol=1e-6)
    three = _write(tmp_path / "three.wav", np.stack([left, right, left], axis=1), 16000)
    np.testing.assert_allclose(load_audio(three, 16000), (0.2 - 0.6 + 0.2) / 3, atol=1e-6)


def test_silence_is_fine(tmp_path):
    path = _write(tmp_path / "silence.wav", np.zeros(800, np.float32), 16000, "PCM_16")
    wav = load_audio(path, 16000)
    assert wav.shape == (800,) and not wav.any()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as ei:
        load_audio(path, 16000)
    assert str(path) in str(ei.value)
    with pytest.raises(AudioError, match="not found"):
        audio_info(path)
    assert audio_problem(path) == "file not found"


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="unreadable or corrupt") as ei:
        load_audio(path, 16000)
    assert str(path) in str(ei.value) and "expected" in str(ei.value)
    assert "corrupt" in audio_problem(path)


def test_empty_files(tmp_path):
    zero_bytes = tmp_path / "empty.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioError, match=str(zero_bytes)):
        load_audio(zero_bytes, 16000)
    no_samples = _write(tmp_path / "nosamples.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="0 samples"):
        load_audio(no_samples, 16000)
    with pytest.raises(AudioError, match="0 samples"):
        audio_info(no_samples)


def test_nan_and_inf_audio(tmp_path):
    data = np.zeros(1000, np.float32)
    data[10] = np.nan
    path = _write(tmp_path / "nan.wav", data, 16000)
    with pytest.raises(AudioError, match="non-finite") as ei:
        load_audio(path, 16000)
    assert str(path) in str(ei.value)
    data[10] = np.inf
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(_write(tmp_path / "inf.wav", data, 16000), 16000)
    # the header alone looks fine: NaN is only found when decoding
    assert audio_info(path).frames == 1000


def test_audio_info(tmp_path):
    path = _write(tmp_path / "a.wav", np.zeros((441, 2), np.float32), 44100)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 441)
    assert info.duration == pytest.approx(0.01)
    assert info.num_samples_at(16000) == 160


def test_bad_sample_rate_arg():
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(FIXTURES / "clotho" / "development" / "birds.wav", 0)


def test_fit_length_modes():
    w = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(w, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_length(w, 4, "center"), [3, 4, 5, 6])
    np.testing.assert_array_equal(fit_length(w, 10, "center"), w)
    padded = fit_length(w, 13, "start")
    assert padded.dtype == np.float32
    np.testing.assert_array_equal(padded, list(range(10)) + [0, 0, 0])
    np.testing.assert_array_equal(fit_length(w, 13, "random", np.random.default_rng(0)), padded)
    starts = {int(fit_length(w, 4, "random", np.random.default_rng(s))[0]) for s in range(200)}
    assert starts == set(range(7))  # every offset 0..6 reachable, nothing out of range
    a = fit_length(w, 5, "random", np.random.default_rng(123))
    b = fit_length(w, 5, "random", np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)


def test_fit_length_errors():
    w = np.zeros(10, np.float32)
    with pytest.raises(InputError, match="rng"):
        fit_length(w, 4, "random")
    with pytest.raises(InputError, match="mode"):
        fit_length(w, 4, "middle")
    with pytest.raises(InputError, match="positive"):
        fit_length(w, 0)
    with pytest.raises(InputError, match="1-D"):
        fit_length(np.zeros((2, 10)), 4)
