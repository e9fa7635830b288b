"""`hade index --aux-captions`: HCI+AC windows encoded with their file's generated caption, kept per file."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import soundfile as sf
import torch
from hade.errors import InputError
from hade.index import build_index, merge_indexes
from hade.cli import main

CAPTIONS = {"a.wav": "a dog barks twice", "sub/b.wav": "rain falls on a roof"}


@pytest.fixture(scope="module")
def ac_ckpt(ckpt_factory, tmp_path_factory):
    return ckpt_factory(tmp_path_factory.mktemp("ckpt") / "ac", head="hci+ac")


@pytest.fixture
def folder(tmp_path):
    """Three one-second files at 8 kHz: a.wav, sub/b.wav, c.wav."""
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.wav", "sub/b.wav", "c.wav"):
        sf.write(root / name, (0.1 * rng.standard_normal(8000)).astype(np.float32), 8000)
    return root


def _stored_captions(index_dir):
    with sqlite3.connect(index_dir / "index.sqlite") as c:
        return dict(c.execute("SELECT path, aux_caption FROM files"))


def _captions_file(tmp_path, table, name="captions.json"):
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return path


def test_windows_are_encoded_with_their_files_caption(ac_ckpt, folder, tmp_path, windows_of):
    import hade
    from hade.data.audio import load_audio

    # b is found by its file name, a by its relative path
    captions = _captions_file(tmp_path, {"a.wav": CAPTIONS["a.wav"], "b.wav": CAPTIONS["sub/b.wav"]})
    stats = build_index(folder, tmp_path / "ac.idx", ac_ckpt, aux_captions=captions, progress=False)
    assert stats.captioned_files == 2 and stats.encoded_files == 3
    assert _stored_captions(tmp_path / "ac.idx") == {**CAPTIONS, "c.wav": None}
    assert any("no caption for 1 of 3 files" in n and "c.wav" in n for n in stats.notes)
    build_index(folder, tmp_path / "plain.idx", ac_ckpt, progress=False)

    model = hade.load(ac_ckpt)
    with sqlite3.connect(tmp_path / "ac.idx" / "index.sqlite") as c:
        window = json.loads(c.execute("SELECT value FROM meta WHERE key='window_samples'").fetchone()[0])
    wave = torch.zeros(1, window)  # the index zero-pads a file shorter than a window
    audio = torch.from_numpy(load_audio(folder / "sub" / "b.wav", model.sample_rate))
    wave[0, :len(audio)] = audio
    with torch.inference_mode():
        expected = model.encode_audio(wave, [CAPTIONS["sub/b.wav"]])
    with_ac, plain = windows_of(tmp_path / "ac.idx"), windows_of(tmp_path / "plain.idx")
    for key, (_, arrays) in with_ac.items():
        differs = any(not np.allclose(arrays[k], plain[key][1][k], atol=1e-3) for k in arrays)
        assert differs == (key[0] != "c.wav"), key  # the caption changes exactly the captioned files
        if key[0] == "sub/b.wav":
            for k, v in arrays.items():
                np.testing.assert_allclose(v, expected[k][0].float().numpy(), atol=2e-3, rtol=2e-3)


def test_a_changed_caption_re_encodes_only_that_file(ac_ckpt, folder, tmp_path, encode_counter, windows_of):
    out = tmp_path / "ac.idx"
    build_index(folder, out, ac_ckpt, aux_captions=dict(CAPTIONS), progress=False)
    before = windows_of(out)
    encode_counter.update(calls=0, windows=0)
    same = build_index(folder, out, aux_captions=dict(CAPTIONS), progress=False)
    assert same.unchanged_files == 3 and encode_counter["windows"] == 0
    without = build_index(folder, out, progress=False)  # no captions given: indexed files stay as they are
    assert without.encoded_files == 0 and encode_counter["windows"] == 0

    changed = build_index(folder, out, aux_captions={**CAPTIONS, "a.wav": "a cat meows"}, progress=False)
    assert changed.recaptioned_files == 1 and changed.encoded_files == 1 and encode_counter["windows"] == 1
    assert _stored_captions(out)["a.wav"] == "a cat meows"
    after = windows_of(out)
    assert after.keys() == before.keys()
    for key, (_, arrays) in after.items():
        moved = any(not np.array_equal(arrays[k], before[key][1][k]) for k in arrays)
        assert moved == (key[0] == "a.wav"), key


def test_a_copy_reuses_windows_only_with_the_same_caption(ac_ckpt, folder, tmp_path, encode_counter):
    out = tmp_path / "ac.idx"
    build_index(folder, out, ac_ckpt, aux_captions=dict(CAPTIONS), progress=False)
    (folder / "copy_same.wav").write_bytes((folder / "a.wav").read_bytes())
    (folder / "copy_other.wav").write_bytes((folder / "a.wav").read_bytes())
    encode_counter.update(calls=0, windows=0)
    stats = build_index(folder, out, aux_captions={**CAPTIONS, "copy_same.wav": CAPTIONS["a.wav"],
                                                   "copy_other.wav": "a siren wails"}, progress=False)
    assert stats.reused_files == 1 and stats.encoded_files == 1 and encode_counter["windows"] == 1


def test_bad_uses_are_clear_errors_and_notes(ac_ckpt, dp_ckpt, folder, tmp_path):
    with pytest.raises(InputError, match="does not use auxiliary captions"):
        build_index(folder, tmp_path / "dp.idx", dp_ckpt, aux_captions=dict(CAPTIONS), progress=False)
    with pytest.raises(InputError, match="auxiliary caption file not found"):
        build_index(folder, tmp_path / "x.idx", ac_ckpt, aux_captions=tmp_path / "missing.json", progress=False)
    with pytest.raises(InputError, match="non-empty caption"):
        build_index(folder, tmp_path / "x.idx", ac_ckpt, aux_captions={"a.wav": " "}, progress=False)
    stats = build_index(folder, tmp_path / "ac.idx", ac_ckpt, aux_captions={**CAPTIONS, "clip_17": "wind"},
                        progress=False)
    assert any("1 captions match no indexed file" in n and "clip_17" in n for n in stats.notes)
    assert not any("encoded without them" in n for n in stats.notes)


def test_cli_and_merge_keep_the_captions(ac_ckpt, folder, tmp_path, capsys):
    captions = _captions_file(tmp_path, CAPTIONS)
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part{i}")
        assert main(["index", str(folder), "--ckpt", str(ac_ckpt), "--out", str(parts[-1]), "--shard", f"{i}/2",
                     "--aux-captions", str(captions), "--quiet", "--json"]) == 0
    merge_indexes(tmp_path / "merged", parts, progress=False)
    assert _stored_captions(tmp_path / "merged") == {**CAPTIONS, "c.wav": None}


def test_an_index_from_before_captions_is_upgraded(dp_ckpt, folder, tmp_path):
    out = tmp_path / "old.idx"
    build_index(folder, out, dp_ckpt, progress=False)
    with sqlite3.connect(out / "index.sqlite") as c:  # the files table as hade wrote it before this column
        c.execute("ALTER TABLE files DROP COLUMN aux_caption")
    (folder / "new.wav").write_bytes((folder / "c.wav").read_bytes())
    stats = build_index(folder, out, progress=False)
    assert stats.reused_files == 1 and stats.files == 4
    assert set(_stored_captions(out)) == {"a.wav", "sub/b.wav", "c.wav", "new.wav"}
