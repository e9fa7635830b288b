"""Building and updating an index: layout, incremental passes, errors, interruption, fingerprints, windows."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from hade.errors import InputError
from hade.index import Index, build_index
from hade.index.build import window_bounds
from hade.index.store import model_fingerprint


def test_build_layout_and_search_shapes(dp_index, dp_ckpt, synth_dir):
    out, stats = dp_index
    assert stats.files == 24 and stats.windows == 24 and stats.encoded_windows == 24
    assert stats.errors == [] and stats.ann.kind == "flat"
    assert (out / "index.sqlite").is_file() and (out / "ann.json").is_file()
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    db = sqlite3.connect(out / "index.sqlite")
    cols = {r[1] for r in db.execute("PRAGMA table_info(files)")}
    assert {"path", "size", "mtime_ns", "sha256", "status"} <= cols
    db.close()
    ix = Index.open(out)
    info = ix.info()
    assert len(ix) == 24 and info.windows == 24 and info.files == 24
    assert info.fingerprint == model_fingerprint(dp_ckpt) and info.head == "dp"
    assert info.ann.kind == "flat" and info.storage_dtype == "float16" and info.repr_keys == ("embed",)
    assert info.to_dict()["precision"] == "float16"  # the old name, kept for HTTP clients of /health
    assert set(info.to_dict()) == {"path", "root", "files", "unreadable_files", "windows", "fingerprint", "head",
                                   "factorised", "sample_rate", "window", "hop", "precision", "storage_dtype",
                                   "pooled_key", "repr_keys", "shard", "ann", "token_codec", "bytes_per_window"}
    assert json.loads(json.dumps(info.to_dict()))["ann"]["kind"] == "flat"  # JSON-ready as it is
    hits = ix.search("a dog barks while rain falls", k=5)
    assert len(hits) == 5 and len({h.id for h in hits}) == 5
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    h = hits[0]
    assert h.start == 0.0 and h.end == pytest.approx(1.0) and (synth_dir / h.path).is_file()
    assert ix.audio_path(h.id) == synth_dir / h.path
    assert ix.window_audio(h.id).shape == (8000,)
    assert ix.get(h.id).path == h.path
    with pytest.raises(KeyError):
        ix.get(10_000)
    assert len(ix.search("a dog barks", k=100)) == 24
    ix.close()


def test_reindex_unchanged_encodes_nothing(dp_ckpt, fresh_data, tmp_path, encode_counter, windows_of):
    first = build_index(fresh_data, tmp_path / "idx", dp_ckpt, progress=False)
    assert encode_counter["windows"] == 24 and first.hashed_files == 24
    before = windows_of(tmp_path / "idx")
    encode_counter.update(calls=0, windows=0)
    again = build_index(fresh_data, tmp_path / "idx", progress=False)  # no --ckpt needed afterwards
    assert encode_counter == {"calls": 0, "windows": 0}
    assert again.unchanged_files == 24 and again.hashed_files == 0 and again.encoded_windows == 0
    assert again.commits == 0 and again.ann.generation == first.ann.generation
    assert windows_of(tmp_path / "idx").keys() == before.keys()


def test_modified_added_deleted_and_touched_files(dp_ckpt, fresh_data, tmp_path, encode_counter, windows_of):
    idx = tmp_path / "idx"
    build_index(fresh_data, idx, dp_ckpt, progress=False)
    before = windows_of(idx)
    files = sorted(p for p in fresh_data.rglob("*.wav"))
    changed, deleted, touched = files[0], files[1], files[2]
    sf.write(changed, np.random.default_rng(1).uniform(-0.5, 0.5, 20000).astype(np.float32), 8000)
    deleted.unlink()
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (fresh_data / "new").mkdir()
    sf.write(fresh_data / "new" / "added.flac", np.random.default_rng(2).uniform(-0.5, 0.5, 4000), 8000)
    shutil.copyfile(files[5], fresh_data / "new" / "copy.wav")  # same bytes as an indexed file
    encode_counter.update(calls=0, windows=0)
    stats = build_index(fresh_data, idx, progress=False)
    assert stats.encoded_files == 2 and stats.removed_files == 1 and stats.touched_files == 1
    assert stats.reused_files == 1 and stats.hashed_files == 4
    assert encode_counter["windows"] == stats.encoded_windows == 3  # 2.5 s file: 2 windows; added: 1
    after = windows_of(idx)
    rel = lambda p: p.relative_to(fresh_data).as_posix()  # noqa: E731
    assert not any(k[0] == rel(deleted) for k in after)
    assert [k[1:] for k in after if k[0] == rel(changed)] == [(0, 16383), (3617, 20000)]
    assert [k for k in after if k[0] == "new/added.flac"] == [("new/added.flac", 0, 4000)]
    copy = next(v for k, v in after.items() if k[0] == "new/copy.wav")
    orig = next(v for k, v in after.items() if k[0] == rel(files[5]))
    np.testing.assert_array_equal(copy[1]["embed"], orig[1]["embed"])
    for key, (wid, arrays) in before.items():  # untouched windows keep ids and values
        if key[0] not in (rel(changed), rel(deleted)):
            assert after[key][0] == wid
            np.testing.assert_array_equal(after[key][1]["embed"], arrays["embed"])
    ix = Index.open(idx)
    assert len(ix) == 24 - 1 - 1 + 2 + 1 + 1
    assert {h.path for h in ix.search("a bell", k=100)} >= {"new/added.flac", "new/copy.wav", rel(changed)}
    ix.close()


def test_corrupt_file_is_reported_and_skipped(dp_ckpt, fresh_data, tmp_path, capsys):
    (fresh_data / "broken.wav").write_bytes(b"RIFF\x00\x00 this is not audio" * 10)
    (fresh_data / "empty.flac").write_bytes(b"")
    stats = build_index(fresh_data, tmp_path / "idx", dp_ckpt, progress=False)
    bad = {e.path: e.reason for e in stats.errors}
    assert set(bad) == {"broken.wav", "empty.flac"} and all(bad.values())
    assert stats.files == 24 and stats.windows == 24
    again = build_index(fresh_data, tmp_path / "idx", progress=False)
    assert {e.path for e in again.errors} == set(bad) and again.new_errors == []
    assert again.hashed_files == 0
    ix = Index.open(tmp_path / "idx")
    assert ix.info().unreadable_files == 2 and len(ix) == 24
    ix.close()


def test_interrupted_build_resumes_to_the_same_index(dp_ckpt, dp_index, fresh_data, tmp_path, monkeypatch, windows_of):
    from hade.models.retrieval import RetrievalModel

    reference = windows_of(dp_index[0])  # an uninterrupted build of the same files (batch size 8)
    original = RetrievalModel.encode_audio
    calls = {"n": 0}

    def failing(self, waveform, aux_captions=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return original(self, waveform, aux_captions)

    monkeypatch.setattr(RetrievalModel, "encode_audio", failing)
    with pytest.raises(RuntimeError, match="killed"):
        build_index(fresh_data, tmp_path / "idx", dp_ckpt, batch_size=5, progress=False)
    monkeypatch.setattr(RetrievalModel, "encode_audio", original)
    with pytest.raises(InputError, match="run `hade index` again"):
        Index.open(tmp_path / "idx")
    db = sqlite3.connect(tmp_path / "idx" / "index.sqlite")
    assert db.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 10  # two committed batches
    db.close()
    resumed = build_index(fresh_data, tmp_path / "idx", batch_size=5, progress=False)
    assert resumed.encoded_windows == 14 and resumed.unchanged_files == 10
    got = windows_of(tmp_path / "idx")
    assert got.keys() == reference.keys()
    for key, (wid, arrays) in reference.items():
        assert got[key][0] == wid
        np.testing.assert_allclose(got[key][1]["embed"], arrays["embed"], atol=2e-3)


def test_kill_between_chunk_write_and_commit_leaves_a_consistent_index(dp_ckpt, fresh_data, tmp_path, monkeypatch):
    from hade.index.store import Store

    original = Store.register_chunk
    state = {"n": 0}

    def failing(self, chunk_id, rows, codec=None):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return original(self, chunk_id, rows, codec)

    monkeypatch.setattr(Store, "register_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        build_index(fresh_data, tmp_path / "idx", dp_ckpt, batch_size=8, progress=False)
    assert len(list((tmp_path / "idx" / "arrays").iterdir())) == 2  # one committed, one orphan
    monkeypatch.setattr(Store, "register_chunk", original)
    stats = build_index(fresh_data, tmp_path / "idx", batch_size=8, progress=False)
    assert stats.encoded_windows == 16 and stats.windows == 24
    assert len(Index.open(tmp_path / "idx")) == 24


def test_fragmented_store_is_compacted_and_keeps_ids_and_values(dp_ckpt, dp_index, synth_dir, tmp_path,
                                                                windows_of):
    stats = build_index(synth_dir, tmp_path / "idx", dp_ckpt, batch_size=1, progress=False)
    assert stats.commits == 24
    assert [p.name for p in (tmp_path / "idx" / "arrays").iterdir()] == ["c000025"]  # 24 chunks -> 1
    got, ref = windows_of(tmp_path / "idx"), windows_of(dp_index[0])
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in ref.items()}
    for key, (_, arrays) in ref.items():
        np.testing.assert_allclose(got[key][1]["embed"], arrays["embed"], atol=2e-3)
    again = build_index(synth_dir, tmp_path / "idx", ann_threshold=10, progress=False)  # only the ANN changes
    assert again.encoded_windows == 0 and again.ann.kind == "ivf"
    assert build_index(synth_dir, tmp_path / "idx", progress=False).ann.kind == "ivf"  # threshold kept


def test_fingerprint_mismatch_is_a_clear_error(dp_ckpt, dp_index, other_ckpt, synth_dir, tmp_path, encode_counter):
    shutil.copytree(dp_index[0], tmp_path / "idx")  # an index of synth_dir built with dp_ckpt
    with pytest.raises(InputError, match=r"built with model .* --rebuild"):
        build_index(synth_dir, tmp_path / "idx", other_ckpt, progress=False)
    assert encode_counter["windows"] == 0
    stats = build_index(synth_dir, tmp_path / "idx", other_ckpt, rebuild=True, progress=False)
    assert stats.encoded_windows == 24
    ix = Index.open(tmp_path / "idx")
    assert ix.info().fingerprint == model_fingerprint(other_ckpt) != model_fingerprint(dp_ckpt)
    ix.close()
    with pytest.raises(InputError, match="not a hade index"):
        build_index(synth_dir, synth_dir, dp_ckpt, progress=False)  # never writes into a non-index folder


def test_long_file_gives_overlapping_windows(dp_ckpt, tmp_path):
    data = tmp_path / "long"
    data.mkdir()
    sf.write(data / "long.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 5 * 8000).astype(np.float32), 8000)
    sf.write(data / "short.wav", np.random.default_rng(1).uniform(-0.3, 0.3, 4000).astype(np.float32), 8000)
    sf.write(data / "hi-rate.wav", np.random.default_rng(2).uniform(-0.3, 0.3, 3 * 16000).astype(np.float32), 16000)
    stats = build_index(data, tmp_path / "idx", dp_ckpt, window=2.0, hop=1.0, progress=False)
    assert stats.windows == 4 + 1 + 2
    ix = Index.open(tmp_path / "idx")
    wins = sorted((ix.get(int(i)).path, ix.get(int(i)).start, ix.get(int(i)).end) for i in ix.table["id"])
    assert wins == [("hi-rate.wav", 0.0, 2.0), ("hi-rate.wav", 1.0, 3.0),
                    ("long.wav", 0.0, 2.0), ("long.wav", 1.0, 3.0), ("long.wav", 2.0, 4.0), ("long.wav", 3.0, 5.0),
                    ("short.wav", 0.0, 0.5)]
    long_ids = [int(i) for i in ix.table["id"] if ix.get(int(i)).path == "long.wav"]
    wave, _ = sf.read(data / "long.wav", dtype="float32")
    np.testing.assert_array_equal(ix.window_audio(long_ids[2]), wave[16000:32000])
    assert ix.window_audio([int(i) for i in ix.table["id"] if ix.get(int(i)).path == "short.wav"][0]).shape == (4000,)
    assert ix.info().window == 2.0 and ix.info().hop == 1.0
    ix.close()
    with pytest.raises(InputError, match="--window"):
        build_index(data, tmp_path / "idx", window=1.0, progress=False)
    with pytest.raises(InputError, match="clip length"):
        build_index(data, tmp_path / "idx2", dp_ckpt, window=30.0, progress=False)


def test_window_bounds():
    assert window_bounds(100, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100)]
    assert window_bounds(110, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100), (70, 110)]
    assert window_bounds(30, 40, 20) == [(0, 30)]
    assert window_bounds(40, 40, 20) == [(0, 40)]


def test_a_head_with_auxiliary_captions_is_noted(dp_index, ckpt_factory, tmp_path):
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "few"
    folder.mkdir()
    sf.write(folder / "tone.wav", (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32), 8000)
    assert dp_index[1].notes == []
    stats = build_index(folder, tmp_path / "ac.idx", ckpt_factory(tmp_path / "ac", head="hci+ac"), progress=False)
    assert stats.windows == 1 and len(stats.notes) == 1 and "auxiliary captions" in stats.notes[0]


def test_default_window_is_the_training_clip_length():
    from hade.index.windows import resolve_window

    assert resolve_window(16000, 81919, None, None, clip_samples=64000) == (64000, 32000)
    assert resolve_window(16000, 81919, None, None) == (81919, 40959)  # unknown: the longest input
    assert resolve_window(48000, 10**7, None, None, clip_samples=10**6)[0] == 480000  # capped to 10 s


def test_bf16_compute_builds_an_index_close_to_fp32(dp_ckpt, dp_index, synth_dir, tmp_path, windows_of):
    stats = build_index(synth_dir, tmp_path / "bf16.idx", dp_ckpt, compute="bf16", batch_size=8, progress=False)
    assert stats.windows == 24
    ref, low = windows_of(dp_index[0]), windows_of(tmp_path / "bf16.idx")
    assert low.keys() == ref.keys()
    gaps = [np.abs(low[k][1]["embed"] - ref[k][1]["embed"]).max() for k in ref]
    assert 0 < max(gaps) < 0.05
    with pytest.raises(InputError, match=r"compute: expected one of \['fp32', 'bf16', 'fp16'\], got 'int8'"):
        build_index(synth_dir, tmp_path / "x.idx", dp_ckpt, compute="int8", progress=False)


def test_ffmpeg_containers_are_indexed(dp_ckpt, tmp_path, encode_av):
    """M4A and WebM files are scanned, decoded and windowed like WAV ones; served with a media type."""
    from hade.data.audio import AUDIO_EXTENSIONS
    from hade.serve.service import MEDIA_TYPES

    data = tmp_path / "library"
    data.mkdir()
    rng = np.random.default_rng(0)
    encode_av(data / "phone.m4a", rng.uniform(-0.3, 0.3, 3 * 16000).astype(np.float32), 16000, "m4a")
    encode_av(data / "video-audio.webm", rng.uniform(-0.3, 0.3, 2 * 48000).astype(np.float32), 48000, "webm")
    sf.write(data / "plain.wav", rng.uniform(-0.3, 0.3, 8000).astype(np.float32), 8000)
    stats = build_index(data, tmp_path / "idx", dp_ckpt, window=1.0, hop=1.0, progress=False)
    assert stats.errors == [] and stats.files == 3
    with Index.open(tmp_path / "idx") as ix:
        per_file = {}
        for i in ix.table["id"]:
            per_file.setdefault(ix.get(int(i)).path, []).append(int(i))
        # 3 s of AAC decodes to a little more (encoder delay), so a 4th window ends exactly at its end
        assert len(per_file["phone.m4a"]) in (3, 4) and len(per_file["video-audio.webm"]) == 2
        assert ix.window_audio(per_file["video-audio.webm"][0]).shape == (8000,)
    assert set(AUDIO_EXTENSIONS) <= set(MEDIA_TYPES)
