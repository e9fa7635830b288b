"""Token-compressed indexes: codes in the chunks, scores near the float ones, upgrade, repair, merge."""
from __future__ import annotations

import numpy as np
import pytest
from hade.errors import IndexDamaged, InputError
from hade.index import Index, build_index
from hade.index.finalize import compact
from hade.index.merge import merge_indexes
from hade.index.integrity import check_index
from hade.index.store import Store

CODEC = "PQ16"  # 64-dim tokens: 16 sub-vectors of 4 dims, 16 + 2 bytes a token instead of 128 (float16)
QUERIES = ("a dog barks", "rain on a roof", "a bell rings twice", "an engine idles")
FIT_NOW = {"token_codec_min_tokens": 0}  # fit on this tiny folder's few tokens (deferral: test_small_index.py)
SCORE_BOUND = 0.03  # |compressed - float| score of a (query, window) pair, THA+DCR tiny model (max seen 0.013)


@pytest.fixture(scope="session")
def float_and_coded(tha_ckpt, synth_dir, tmp_path_factory, single_thread):
    """(float index, compressed index) of the same folder and model."""
    root = tmp_path_factory.mktemp("coded")
    with single_thread():
        build_index(synth_dir, root / "float", tha_ckpt, progress=False, token_codec="none")
        stats = build_index(synth_dir, root / "coded", tha_ckpt, progress=False, token_codec=CODEC, **FIT_NOW)
    return root / "float", root / "coded", stats


def _scores(index_dir, query):
    with Index.open(index_dir) as index:
        scores = index.scores(query)
        return dict(zip(index.table["id"].tolist(), scores.tolist()))


def test_a_compressed_index_stores_codes_and_scores_near_the_float_one(float_and_coded):
    float_dir, coded_dir, stats = float_and_coded
    assert stats.notes == []
    with Index.open(coded_dir) as index:
        info = index.info()
        tc = info.token_codec
        assert tc.factory == CODEC and tc.keys == ("tha_audio_0",) and tc.current
        files = {p.name for p in (coded_dir / "arrays").rglob("*.npy")}
        assert "tha_audio_0.codes.npy" in files and "tha_audio_0.npy" not in files
        assert "tha_audio_1.npy" in files  # [16, 64]: too small to be worth a codec
        codes = np.load(next((coded_dir / "arrays").rglob("tha_audio_0.codes.npy")))
        assert codes.dtype == np.uint8 and codes.shape[1:] == (64, 18)
    with Index.open(float_dir) as index:
        assert index.info().token_codec.factory == "none"
        assert index.info().bytes_per_window - info.bytes_per_window == 64 * (128 - 18)
    for query in QUERIES:
        exact, coded = _scores(float_dir, query), _scores(coded_dir, query)
        assert coded.keys() == exact.keys()
        diff = np.abs(np.array([coded[k] - exact[k] for k in exact]))
        assert 0 < diff.max() < SCORE_BOUND  # lossy, but within the bound


def test_search_ranks_alike(float_and_coded):
    float_dir, coded_dir, _ = float_and_coded
    overlaps = []
    with Index.open(float_dir) as a, Index.open(coded_dir) as b:
        for query in QUERIES:
            top_a = {(h.path, h.start) for h in a.search(query, k=10)}
            top_b = {(h.path, h.start) for h in b.search(query, k=10)}
            overlaps.append(len(top_a & top_b) / 10)
    assert np.mean(overlaps) >= 0.8


def test_float_index_is_upgraded_by_giving_a_codec(float_and_coded, tha_ckpt, synth_dir, tmp_path):
    """An index with float tokens (as every index before token codecs) gets compressed in place; the codec is
    fitted on the same windows as a fresh build's, so the codes (and scores) are the same."""
    import shutil

    _, coded_dir, _ = float_and_coded
    old = tmp_path / "old"
    build_index(synth_dir, old, tha_ckpt, progress=False, token_codec="none")
    stats = build_index(synth_dir, old, progress=False, token_codec=CODEC, **FIT_NOW)
    assert stats.encoded_files == 0
    assert not list((old / "arrays").rglob("tha_audio_0.npy"))
    with Index.open(old) as up, Index.open(coded_dir) as fresh:
        assert up.info().token_codec.current == fresh.info().token_codec.current
    for query in QUERIES[:2]:
        a, b = _scores(old, query), _scores(coded_dir, query)
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], atol=1e-6)
    assert sorted(p.name for p in (old / "codecs").iterdir()) == [fresh_id(coded_dir)]
    shutil.rmtree(old)


def fresh_id(index_dir) -> str:
    store = Store(index_dir)
    try:
        return store.meta().token_codec.current
    finally:
        store.close()


def test_codec_options_are_checked(float_and_coded, synth_dir, tha_ckpt, tmp_path):
    _, coded_dir, _ = float_and_coded
    with pytest.raises(InputError, match="token codec is 'PQ16'; use --rebuild"):
        build_index(synth_dir, coded_dir, progress=False, token_codec="PQ8")
    with pytest.raises(InputError, match="token_codec 'garbage': not a faiss factory"):
        build_index(synth_dir, tmp_path / "x", tha_ckpt, progress=False, token_codec="garbage")


def test_too_few_tokens_store_floats_with_a_note(tha_ckpt, synth_dir, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for wav in sorted(synth_dir.rglob("*.wav"))[:3]:  # 3 windows x 64 tokens < the 256 PQ training points
        (small / wav.name).write_bytes(wav.read_bytes())
    stats = build_index(small, tmp_path / "idx", tha_ckpt, progress=False, token_codec=CODEC, **FIT_NOW)
    assert any("not fitted" in n and "stored as float" in n for n in stats.notes)
    assert list((tmp_path / "idx" / "arrays").rglob("tha_audio_0.npy"))
    with Index.open(tmp_path / "idx") as index:
        assert index.info().token_codec.current is None and len(index.search("a dog", k=2)) == 2


def test_damaged_codec_is_reported_and_repaired(float_and_coded, synth_dir, tmp_path):
    import shutil

    _, coded_dir, _ = float_and_coded
    idx = tmp_path / "idx"
    shutil.copytree(coded_dir, idx)
    codec_id = fresh_id(idx)
    faiss_file = idx / "codecs" / codec_id / "tha_audio_0.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    with pytest.raises(IndexDamaged, match=f"codecs/{codec_id}/tha_audio_0.faiss is truncated"):
        Index.open(idx)
    checked = check_index(idx)
    assert [(p.file, p.kind) for p in checked.problems] == [(f"codecs/{codec_id}/tha_audio_0.faiss", "codec")]
    stats = build_index(synth_dir, idx, progress=False)
    assert any(f"dropped token codec set {codec_id}" in r for r in stats.repaired)
    assert stats.encoded_files == 24
    with Index.open(idx) as index:  # re-fitted on the same windows: the same set, written anew
        assert index.info().token_codec.current == codec_id and len(index) == 24
        assert len(index.search("a dog barks", k=3)) == 3
    assert faiss_file.stat().st_size > 100


def test_shards_merge_with_their_own_codecs_and_compaction_keeps_codes(tha_ckpt, synth_dir, tmp_path,
                                                                       float_and_coded):
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):
        build_index(synth_dir, part, tha_ckpt, shard=f"{i}/2", progress=False, token_codec=CODEC, **FIT_NOW)
    ids = {fresh_id(p) for p in parts}
    assert len(ids) == 2  # each shard fitted its own codec set
    merge_indexes(tmp_path / "merged", parts, progress=False)
    assert {p.name for p in (tmp_path / "merged" / "codecs").iterdir()} == ids
    by_window = {}
    for part in parts:
        with Index.open(part) as index:
            for query in QUERIES[:2]:
                for wid, s in zip(index.table["id"].tolist(), index.scores(query).tolist()):
                    by_window[(query, index.get(wid).path, index.get(wid).start)] = s
    with Index.open(tmp_path / "merged") as merged:
        for query in QUERIES[:2]:
            for wid, s in zip(merged.table["id"].tolist(), merged.scores(query).tolist()):
                w = merged.get(wid)
                assert s == pytest.approx(by_window[(query, w.path, w.start)], abs=1e-6)  # codes copied, not re-coded
        before = merged.scores(QUERIES[0])
    store = Store(tmp_path / "merged")
    try:
        assert compact(store, force=True)
        assert set(store.chunk_codecs().values()) == ids
    finally:
        store.close()
    with Index.open(tmp_path / "merged") as merged:
        np.testing.assert_allclose(merged.scores(QUERIES[0]), before, atol=1e-6)


def test_cli_options_are_kept_in_the_index(tha_ckpt, synth_dir, tmp_path, capsys, monkeypatch):
    import json

    from hade.index import compression

    from hade.cli import main
    from hade.index.ann import AnnParams, ivf_sq8_bytes
    from hade.index.finalize import _pq_wanted

    out = tmp_path / "idx"
    argv = ["index", str(synth_dir), "--ckpt", str(tha_ckpt), "--out", str(out), "--quiet", "--json"]
    assert main([*argv, "--token-codec", "none", "--ann-memory-budget", "2G"]) == 0
    capsys.readouterr()
    store = Store(out)
    try:
        meta = store.meta()
        assert meta.ann_memory_budget == 2 * 2**30 and meta.token_codec.factory == "none"
    finally:
        store.close()
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--ann-memory-budget", "12x"])
    assert exit_.value.code == 2
    assert "'12x': expected a size in bytes such as 300000, 512M or 2G" in capsys.readouterr().err
    monkeypatch.setattr(compression, "tokens_to_fit", lambda factory, dim: 0)  # fit on this tiny folder
    assert main([*argv, "--token-codec", CODEC]) == 0  # the upgrade
    assert json.loads(capsys.readouterr().out)["encoded_files"] == 0
    assert list((out / "arrays").rglob("tha_audio_0.codes.npy"))
    ivf = AnnParams("ivf", 10**6, 256)
    assert _pq_wanted(ivf, ivf_sq8_bytes(10**6, 256) - 1) and not _pq_wanted(ivf, None)
    assert not _pq_wanted(AnnParams("flat", 10**6, 256), 1)


def test_compaction_bounds_the_bytes_of_a_chunk(float_and_coded, tmp_path, monkeypatch):
    """Chunks hold at most COMPACT_BYTES of float arrays (gathered in memory), so large token arrays give
    chunks of fewer rows; scores are unchanged by where rows live."""
    import shutil

    from hade.index import finalize as fin

    spec = {"tha_audio_0": {"shape": [256, 256], "dtype": "float16"}, "embed": {"shape": [256], "dtype": "float16"}}
    assert fin.chunk_rows(spec) == fin.COMPACT_BYTES // (256 * 256 * 2 + 512) < fin.COMPACT_ROWS
    assert fin.chunk_rows({"embed": {"shape": [256], "dtype": "float16"}}) == fin.COMPACT_ROWS
    float_dir, _, _ = float_and_coded
    idx = tmp_path / "idx"
    shutil.copytree(float_dir, idx)
    before = _scores(idx, QUERIES[0])
    monkeypatch.setattr(fin, "COMPACT_BYTES", 5 * 11008)  # 5 windows of this index's float arrays
    store = Store(idx)
    try:
        assert compact(store, force=True)
        assert store.chunk_totals() == (24, 5)  # 24 windows in chunks of 5
        assert not compact(store)  # 5 chunks are what 24 windows need: not fragmented
    finally:
        store.close()
    assert _scores(idx, QUERIES[0]) == pytest.approx(before, abs=1e-7)


def test_random_access_reads_equal_the_memory_map(float_and_coded):
    """A search reads candidate rows with pread (random_access): the same arrays as through the memory map."""
    from hade.index.reprs import ReprTable

    for index_dir in float_and_coded[:2]:
        store = Store(index_dir)
        try:
            table, spec = store.window_table(), store.meta().repr_spec
            positions = np.array([5, 0, 23, 7, 7])
            tables = [ReprTable(store, table["chunk"], table["row"], spec, random_access=r) for r in (False, True)]
            mapped, read = (t.gather(positions) for t in tables)
            assert mapped.keys() == read.keys() == spec.keys()
            for key in spec:
                np.testing.assert_array_equal(mapped[key], read[key])
            assert tables[1]._fds and tables[1].close() is None and not tables[1]._fds
        finally:
            store.close()


def test_opq_codes_are_scored_in_their_rotated_space(tha_ckpt, synth_dir, tmp_path, monkeypatch):
    """OPQ codes hold rotated tokens: THA scores them with the query's words rotated instead (its declared
    rotation_pairs), skipping the inverse rotation of every token; the scores equal those of decoding in
    full, also in a merged index whose other shard is coded without a rotation (PQ16)."""
    from hade.index.scoring import WindowScorer
    from hade.index.tokens import TokenCodec

    opq = "OPQ16,PQ16"
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, (part, codec) in enumerate(zip(parts, (opq, CODEC))):
        build_index(synth_dir, part, tha_ckpt, shard=f"{i}/2", progress=False, token_codec=codec, **FIT_NOW)
    merge_indexes(tmp_path / "merged", parts, progress=False)
    decoded: list[bool] = []
    real_decode = TokenCodec.decode
    monkeypatch.setattr(TokenCodec, "decode", lambda self, codes, rotated=False: decoded.append(rotated) or
                        real_decode(self, codes, rotated))
    for index_dir in (parts[0], tmp_path / "merged"):
        with Index.open(index_dir) as index:
            assert len(set(index.reprs.codec_of(np.arange(len(index))))) == (1 if index_dir == parts[0] else 2)
            codec = next(iter(index.reprs.codecs(index.reprs.codec_of([0])[0]).values()))
            assert codec.rotation is not None and np.allclose(codec.rotation @ codec.rotation.T, np.eye(64),
                                                              atol=1e-5)
            decoded.clear()
            rotated = {q: index.scores(q) for q in QUERIES}
            hits = index.search(QUERIES[0], k=5)
            # the OPQ shard's decodes skip the rotation; the PQ16 shard has none to skip
            assert decoded and (all(decoded) if index_dir == parts[0] else set(decoded) == {True, False})
        with monkeypatch.context() as m:
            m.setattr(WindowScorer, "_text_in_space_of", lambda self, text, codec_id: (text, set()))
            with Index.open(index_dir) as index:
                decoded.clear()
                for q in QUERIES:
                    np.testing.assert_allclose(rotated[q], index.scores(q), atol=2e-5)
                assert [h.id for h in index.search(QUERIES[0], k=5)] == [h.id for h in hits]
                assert decoded and not any(decoded)
