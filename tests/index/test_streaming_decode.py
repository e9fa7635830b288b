"""`hade index` decodes a file block by block into its windows: encoding starts before the file is
decoded to its end, only a window and a block of samples are held, and the windows are those of the
whole-file cut (`window_bounds`) with the same samples."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from hade.data import audio as audio_module
from hade.data.audio import STREAM_BLOCK_FRAMES, load_audio, stream_audio
from hade.index import Index, build_index
from hade.index.windows import StreamWindows, window_bounds


@pytest.mark.parametrize("rate", [8000, 44100])
def test_stream_audio_is_load_audio_in_blocks(tmp_path, rate):
    wave = 0.1 * np.random.default_rng(0).standard_normal(int(STREAM_BLOCK_FRAMES * 3.5), dtype=np.float32)
    sf.write(tmp_path / "long.wav", np.stack([wave, -wave / 2], 1), rate)
    blocks = list(stream_audio(tmp_path / "long.wav", 16000))
    assert len(blocks) > 3
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(tmp_path / "long.wav", 16000))


def test_stream_audio_names_the_file_it_cannot_read(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF" + b"\0" * 60)
    with pytest.raises(audio_module.AudioError, match="bad.wav"):
        list(stream_audio(tmp_path / "bad.wav", 16000))


def test_stream_windows_cut_what_window_bounds_cuts():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, window = int(rng.integers(1, 3000)), int(rng.integers(1, 600))
        hop = int(rng.integers(1, window + 1))
        x = rng.standard_normal(n).astype(np.float32)
        cut, got, i = StreamWindows(window, hop), [], 0
        while i < n:
            step = int(rng.integers(1, 400))
            got += cut.feed(x[i:i + step])
            i += step
        got += cut.finish()
        assert [b for b, _ in got] == window_bounds(n, window, hop)
        assert all(np.array_equal(samples, x[s:e]) for (s, e), samples in got)


def test_index_encodes_a_long_file_while_decoding_it(dp_ckpt, tmp_path, monkeypatch, encode_counter):
    """The encoder runs before the last block of the file is decoded; the stored windows are the
    whole-file cut."""
    from hade.index import builder

    folder = tmp_path / "sounds"
    folder.mkdir()
    sr = 8000
    wave = 0.1 * np.random.default_rng(2).standard_normal(sr * 30).astype(np.float32)
    sf.write(folder / "long.wav", wave, sr)
    seen: list[int] = []  # encoder calls made when each block came out

    def blocks(path, sample_rate):
        for block in stream_audio(path, sample_rate):
            seen.append(encode_counter["calls"])
            yield block[:sample_rate]  # small blocks: 1 s each
            for a in range(sample_rate, len(block), sample_rate):
                seen.append(encode_counter["calls"])
                yield block[a:a + sample_rate]

    monkeypatch.setattr(builder, "stream_audio", blocks)
    build_index(folder, tmp_path / "idx", dp_ckpt, window=1.0, hop=0.5, batch_size=4, progress=False)
    assert len(seen) >= 30 and seen[-1] > 0  # batches were encoded before the file's last block
    with Index.open(tmp_path / "idx") as ix:
        model_sr = ix.meta.sample_rate
        expected = window_bounds(len(load_audio(folder / "long.wav", model_sr)), ix.meta.window_samples,
                                 ix.meta.hop_samples)
        got = sorted(zip(ix.table["start_sample"].tolist(), ix.table["end_sample"].tolist()))
        assert got == expected


def test_a_file_failing_midway_is_skipped_and_reported(dp_ckpt, tmp_path, monkeypatch):
    from hade.errors import AudioError
    from hade.index import builder

    folder = tmp_path / "sounds"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(folder / name, 0.1 * np.random.default_rng(3).standard_normal(8000 * 6).astype(np.float32), 8000)

    def blocks(path, sample_rate):
        for i, block in enumerate(stream_audio(path, sample_rate)):
            if path.name == "a.wav" and i == 1:
                err = AudioError(f"audio file {path}: cannot decode its audio (truncated)")
                err.reason = "cannot decode its audio (truncated)"
                raise err
            yield block[:sample_rate]
            yield block[sample_rate:]

    monkeypatch.setattr(builder, "stream_audio", blocks)
    monkeypatch.setattr(audio_module, "STREAM_BLOCK_FRAMES", 8000)
    stats = build_index(folder, tmp_path / "idx", dp_ckpt, window=1.0, hop=0.5, batch_size=2, progress=False)
    assert [e.path for e in stats.errors] == ["a.wav"] and "truncated" in stats.errors[0].reason
    with Index.open(tmp_path / "idx") as ix:
        assert sorted(ix.paths.values()) == ["b.wav"] and len(ix) > 0
