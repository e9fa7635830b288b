"""`hade embed`: texts and audio files/folders to Parquet or .npy + CSV, bad files skipped and reported."""
from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

import hade
from hade.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_model_config, tmp_path_factory):
    from hade.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("embed-ckpt") / "dp"
    save_model(hade.create_model(dataclasses.replace(tiny_model_config, head="dp", text_config=None)), path)
    return path


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """A folder with a long file, a short one in a sub-folder and an undecodable one."""
    root = tmp_path_factory.mktemp("embed-data") / "sounds"
    (root / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(root / "a.wav", (0.1 * rng.standard_normal(8000 * 4)).astype(np.float32), 8000)
    sf.write(root / "b" / "c.flac", (0.1 * rng.standard_normal(6000)).astype(np.float32), 16000)
    (root / "broken.wav").write_bytes(b"RIFF but not really a wave file")
    return root


def _parquet(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


def test_texts_to_parquet_and_npy(ckpt, tmp_path, capsys):
    out = tmp_path / "texts.parquet"
    assert main(["embed", "--ckpt", str(ckpt), "--text", "a dog barks", "--text", "rain", "--out", str(out)]) == 0
    assert "wrote 2 vectors (32 dims, one per text)" in capsys.readouterr().out
    table = _parquet(out)
    assert list(table) == ["text", "vector"] and table["text"] == ["a dog barks", "rain"]
    model = hade.load(ckpt)
    np.testing.assert_allclose(np.array(table["vector"]), model.embed_text(["a dog barks", "rain"]), atol=1e-6)
    (tmp_path / "caps.txt").write_text("a bell rings\n\n  birds chirp  \n", encoding="utf-8")
    assert main(["embed", "--ckpt", str(ckpt), "--texts", str(tmp_path / "caps.txt"), "--out",
                 str(tmp_path / "caps.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "caps.npy"), model.embed_text(["a bell rings", "birds chirp"]),
                               atol=1e-6)
    with open(tmp_path / "caps.csv", newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["text"], ["a bell rings"], ["birds chirp"]]


def test_audio_folders_skip_and_report_bad_files(ckpt, sounds, tmp_path, capsys):
    out = tmp_path / "audio.parquet"
    missing = tmp_path / "nope.wav"
    assert main(["embed", "--ckpt", str(ckpt), str(sounds), str(missing), "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert "wrote 2 vectors (32 dims, one per file)" in std.out and "skipped 2" in std.out
    assert f"skipped {sounds / 'broken.wav'}: " in std.err and f"skipped {missing}: no such file" in std.err
    table = _parquet(out)
    files = [sounds / "a.wav", sounds / "b" / "c.flac"]
    assert table["path"] == [str(f) for f in files]
    assert table["start"] == [0.0, 0.0] and table["end"] == pytest.approx([4.0, 0.375])
    model = hade.load(ckpt)
    np.testing.assert_allclose(np.array(table["vector"]), model.embed_audio(files), atol=1e-6)


def test_per_window_rows_have_their_times(ckpt, sounds, tmp_path, capsys):
    out = tmp_path / "windows.npy"
    assert main(["embed", "--ckpt", str(ckpt), str(sounds / "a.wav"), "--per-window", "--out", str(out)]) == 0
    win = hade.load(ckpt).embed_audio(sounds / "a.wav", per_window=True)
    assert len(win) > 1
    np.testing.assert_allclose(np.load(out), win.vectors, atol=1e-6)
    with open(tmp_path / "windows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["start"]) for r in rows] == pytest.approx(win.start.tolist())
    assert [float(r["end"]) for r in rows] == pytest.approx(win.end.tolist())


def test_bad_requests_are_one_line_errors(ckpt, sounds, tmp_path, capsys):
    out = str(tmp_path / "x.parquet")
    assert main(["embed", "--ckpt", str(ckpt), "--text", "a", str(sounds), "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["embed", "--ckpt", str(ckpt), "--text", "a", "--per-window", "--out", out]) == 2
    assert "for audio" in capsys.readouterr().err
    assert main(["embed", "--ckpt", str(ckpt), "--text", "a", "--out", str(tmp_path / "x.txt")]) == 2
    assert "name a .parquet or .npy file" in capsys.readouterr().err
    assert main(["embed", "--ckpt", str(ckpt), str(sounds / "broken.wav"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 audio files could be read" in err and "Traceback" not in err
    assert not (tmp_path / "x.parquet").exists()
