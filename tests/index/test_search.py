"""Searching: two-stage results vs exhaustive scoring, re-ranking heads, IVF, audio queries, per-file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hade.index import Hit, Index, build_index, search
from hade.index.search import rank

QUERIES = ["a dog barks while rain falls", "a bell rings twice", "birds chirp and then a car passes",
           "an engine idles", "footsteps on gravel", "a door slams", "thunder rumbles far away", "a baby cries",
           "speech and music", "a whistle blows"]


@pytest.fixture(scope="module")
def head_indexes(ckpt_factory, synth_dir, tmp_path_factory, single_thread):
    """{head: index dir} for a re-ranking head (THA+DCR: token features + CA) and pure THA."""
    root = tmp_path_factory.mktemp("heads")
    out = {}
    for head in ("tha+dcr", "tha"):
        ckpt = ckpt_factory(root / f"ckpt-{head}", head=head)
        out[head] = root / f"{head}.idx"
        with single_thread():
            build_index(synth_dir, out[head], ckpt, progress=False)
    return out


def assert_same_hits(a: list[Hit], b: list[Hit]) -> None:
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)


def test_two_stage_equals_exhaustive_when_candidates_cover_the_index(dp_index, head_indexes):
    for path in (dp_index[0], head_indexes["tha+dcr"]):
        ix = Index.open(path)
        assert ix.ann_params.kind == "flat"
        for q in QUERIES[:3]:
            full = ix.search(q, k=10, exhaustive=True)
            assert_same_hits(ix.search(q, k=10, candidates=len(ix)), full)
            scores = ix.scores(q)  # the reference: model.score over every stored window
            best = np.lexsort((ix.table["id"], -scores))[:10]
            assert [h.id for h in full] == [int(ix.table["id"][p]) for p in best]
        ix.close()


def test_rerank_uses_the_heads_score_with_stored_token_features(head_indexes):
    ix = Index.open(head_indexes["tha+dcr"])
    assert {"tha_audio_0", "tha_audio_1", "tha_audio_2", "factors", "embed"} == set(ix.info().repr_keys)
    assert not ix.model.head.capabilities.factorised
    q = QUERIES[0]
    hits = ix.search(q, k=3, candidates=len(ix))
    pos = np.searchsorted(ix.table["id"], [h.id for h in hits])
    arrays = ix.reprs.gather(pos)
    with torch.no_grad():
        expect = ix.model.score(ix.model.encode_text([q]), {k: torch.from_numpy(v).float() for k, v in arrays.items()})
    np.testing.assert_allclose([h.score for h in hits], expect[0].numpy(), rtol=1e-5, atol=1e-6)
    pooled = arrays["embed"].astype(np.float32) @ ix.model.encode_text([q])["embed"][0].detach().numpy()
    assert not np.allclose(pooled, expect[0].numpy(), atol=1e-3)  # the re-ranked score is not the ANN's cosine
    ix.close()


def test_timing_reports_each_phase_without_changing_the_hits(head_indexes):
    with Index.open(head_indexes["tha+dcr"]) as ix:
        timing: dict[str, float] = {}
        timed = ix.search(QUERIES[2], k=5, timing=timing)
        assert_same_hits(timed, ix.search(QUERIES[2], k=5))
        assert set(timing) == {"encode", "ann", "gather", "score", "hits"}
        assert all(ms >= 0 for ms in timing.values()) and timing["encode"] > 0 and timing["score"] > 0
    with Index.open(head_indexes["tha"]) as ix:  # exhaustive: no ANN phase
        timing = {}
        ix.search(QUERIES[2], k=5, timing=timing)
        assert set(timing) == {"encode", "gather", "score", "hits"}


def test_scoring_blocks_are_bounded_in_bytes(head_indexes, monkeypatch):
    import importlib

    scoring = importlib.import_module("hade.index.scoring")  # where the block size is decided

    with Index.open(head_indexes["tha"]) as ix:
        full = ix.search(QUERIES[3], k=5, exhaustive=True)
        spec = ix.info().repr_keys
        per_window = sum(4 * int(np.prod(v["shape"])) for v in ix.meta.repr_spec.values())
        monkeypatch.setattr(scoring, "GATHER_BYTES", 3 * per_window + 1)
        sizes = []
        gather = ix.reprs.gather
        monkeypatch.setattr(ix.reprs, "gather", lambda pos, keys=None, rotated=(): sizes.append(len(pos)) or
                            gather(pos, keys, rotated))
        assert_same_hits(ix.search(QUERIES[3], k=5, exhaustive=True), full)
        assert spec and max(sizes) == 3 and sum(sizes) == len(ix)  # every window, 3 at a time


def test_pure_tha_searches_exhaustively(head_indexes):
    ix = Index.open(head_indexes["tha"])
    assert ix.info().ann.kind == "exhaustive" and ix.ann is None and ix.info().pooled_key is None
    hits = ix.search(QUERIES[1], k=5, candidates=2)  # candidates do not limit an exhaustive search
    assert_same_hits(hits, ix.search(QUERIES[1], k=5, exhaustive=True))
    wave = ix.window_audio(hits[0].id)
    assert ix.search(wave, k=1)[0].id == hits[0].id  # audio query: token-mean cosine
    ix.close()


def test_audio_query_finds_the_clip_itself(dp_index, synth_dir):
    ix = Index.open(dp_index[0])
    for wid in (1, 20):
        w = ix.get(wid)
        by_path = ix.search(synth_dir / w.path, k=3)
        assert by_path[0].id == wid and by_path[0].score == pytest.approx(1.0, abs=2e-3)
        assert ix.search(ix.window_audio(wid), k=1)[0].id == wid
    ix.close()


def test_per_file_collapses_windows_and_ties_break_by_id(dp_ckpt, tmp_path):
    import shutil

    import soundfile as sf

    data = tmp_path / "d"
    data.mkdir()
    sf.write(data / "a.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 5 * 8000).astype(np.float32), 8000)
    shutil.copyfile(data / "a.wav", data / "b.wav")  # identical windows -> tied scores
    build_index(data, tmp_path / "idx", dp_ckpt, window=1.0, hop=0.5, progress=False)
    ix = Index.open(tmp_path / "idx")
    hits = ix.search("a dog barks", k=100)
    assert len(hits) == len(ix) == 18
    for a, b in zip(hits, hits[1:]):
        assert a.score > b.score or (a.score == b.score and a.id < b.id)
    files = ix.search("a dog barks", k=10, per_file=True)
    assert [h.path for h in files] == ["a.wav", "b.wav"] and files[0].score == files[1].score
    assert search(tmp_path / "idx", "a dog barks", k=2)[0] == hits[0]
    ix.close()


def test_rank_orders_by_score_then_id():
    ids = np.array([5, 3, 9, 1])
    scores = np.array([0.5, 0.9, 0.9, 0.1], dtype=np.float32)
    assert rank(ids, scores, 3) == [(3, pytest.approx(0.9)), (9, pytest.approx(0.9)), (5, 0.5)]
    assert [i for i, _ in rank(ids, scores, 10, file_of=np.array([1, 2, 2, 1]))] == [3, 5]


def test_the_split_search_modules_keep_the_public_names():
    """`hade.index.search` and `hade.index` still offer every name imported from them, as the very objects
    of the modules that now implement them (query records, encoder, scorer)."""
    import importlib

    from hade.index import query, query_encoder

    search_module = importlib.import_module("hade.index.search")
    package = importlib.import_module("hade.index")
    for name in ("Like", "QueryVector", "Window", "Hit", "Query", "Guard", "rank", "token_vector"):
        assert getattr(search_module, name) is getattr(query, name), name
    assert search_module.AUDIO_QUERY_BATCH == query_encoder.AUDIO_QUERY_BATCH == 4
    for name in ("Hit", "Index", "Like", "QueryVector", "Window", "search"):
        assert getattr(package, name) is getattr(search_module, name), name
    assert callable(search_module.search) and search_module.Index.open  # the function, not the module


def test_ivf_path_finds_the_exact_top_hit_for_most_queries(dp_ckpt, synth_dir, tmp_path):
    stats = build_index(synth_dir, tmp_path / "idx", dp_ckpt, window=0.5, hop=0.25, ann_threshold=50,
                        batch_size=24, progress=False)
    ann = stats.ann
    assert stats.windows == 24 * 3 and ann.kind == "ivf" and ann.nlist >= 4
    assert ann.nprobe < ann.nlist  # the default probes only some lists
    ix = Index.open(tmp_path / "idx")
    nprobe = max(1, ann.nlist // 4)  # visit a quarter of the lists
    found = sum(ix.search(q, k=1, candidates=10, nprobe=nprobe)[0].id == ix.search(q, k=1, exhaustive=True)[0].id
                for q in QUERIES)
    assert found >= 7, found
    audio_found = sum(ix.search(ix.window_audio(w), k=1, nprobe=nprobe)[0].id == w for w in range(1, 72, 9))
    assert audio_found >= 6, audio_found
    assert_same_hits(ix.search(QUERIES[0], k=5, candidates=len(ix), nprobe=ann.nlist),
                     ix.search(QUERIES[0], k=5, exhaustive=True))
    ix.close()


@pytest.fixture(scope="module")
def like_index(dp_ckpt, synth_dir, tmp_path_factory, single_thread):
    """The SynthCaps folder plus a copy of one clip and a 3 s file of three clips, windows of 1 s every
    0.5 s (30 windows), with an IVF (ann_threshold=20)."""
    import shutil

    import soundfile as sf

    data = tmp_path_factory.mktemp("like") / "data"
    shutil.copytree(synth_dir, data)
    clips = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.wav"))
    shutil.copyfile(data / clips[0], data / "copy-of-first.wav")
    joined = np.concatenate([sf.read(data / c, dtype="float32")[0] for c in clips[1:4]])
    sf.write(data / "three.wav", joined, 8000)
    out = tmp_path_factory.mktemp("like-idx") / "idx"
    with single_thread():
        build_index(data, out, dp_ckpt, window=1.0, hop=0.5, ann_threshold=20, progress=False)
    return out, clips


def test_like_finds_a_copy_and_leaves_out_its_own_file(like_index):
    from hade.index import Like

    path, clips = like_index
    with Index.open(path) as ix:
        assert ix.ann_params.kind == "ivf"
        query = ix.like(clips[0])
        hits = ix.search(query, k=5)
        assert hits[0].path == "copy-of-first.wav" and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert clips[0] not in {h.path for h in hits} and len(hits) == 5
        # the ANN path agrees with scoring every window
        assert_same_hits(ix.search(query, k=5, nprobe=ix.ann_params.nlist), ix.search(query, k=5, exhaustive=True))
        # one window of a longer file: the one centred nearest 1.6 s is [1.0, 2.0), the second clip of three.wav
        at = ix.like("three.wav", at=1.6)
        assert len(at.window_ids) == 1 and ix.get(at.window_ids[0]).start == 1.0
        assert "three.wav" not in {h.path for h in ix.search(at, k=10, exhaustive=True)}
        same = ix.search(Like(at.window_ids, same_file=True), k=len(ix), exhaustive=True)
        assert at.window_ids[0] not in {h.id for h in same} and "three.wav" in {h.path for h in same}
        assert {h.path for h in ix.search(at, k=3, exhaustive=True)} >= {clips[2]}  # the same sound, alone
        with pytest.raises(Exception, match="not a file of the index"):
            ix.like("nowhere.wav")
        with pytest.raises(KeyError):
            ix.search(Like((10**9,)), k=1)
        with pytest.raises(Exception, match="at least one"):
            Like(())


def test_a_dcase_normalised_checkpoint_normalises_search_queries(tiny_model_config, synth_dir, tmp_path):
    """ModelConfig.caption_normalize travels with the checkpoint into the index: a query with capitals and
    punctuation finds what its normalised text finds, with the same scores."""
    import dataclasses

    import hade
    from hade.checkpoint import save_model

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_model_config, text_config=None, caption_normalize="dcase")
    save_model(hade.create_model(cfg), tmp_path / "ckpt")
    build_index(synth_dir, tmp_path / "n.idx", tmp_path / "ckpt", batch_size=8, progress=False)
    with Index.open(tmp_path / "n.idx") as ix:
        assert ix.model.config.caption_normalize == "dcase"
        raw, clean = ix.search("A Dog, barks -- while RAIN falls!", k=5), ix.search("a dog barks  while rain falls", k=5)
    assert [h.id for h in raw] == [h.id for h in clean]
    assert [h.score for h in raw] == [h.score for h in clean]


def test_query_vector_searches_like_its_audio_and_file_scores_are_the_ranked_scores(head_indexes, synth_dir):
    """`query_vector` keeps an audio query's vector (a server explains uploads with it); `file_scores` gives
    the scores `search` ranks by, for every window of one file in time order."""
    from hade.data.audio import load_audio
    from hade.index import QueryVector

    ix = Index.open(head_indexes["tha+dcr"])
    wave = load_audio(sorted(synth_dir.rglob("*.wav"))[2], ix.meta.sample_rate)
    vec = ix.query_vector(wave)
    assert isinstance(vec, QueryVector) and vec.vector.shape == (ix.model.head.pooled_audio(
        ix.model.encode_audio(torch.zeros(1, ix.meta.window_samples))).shape[1],)
    assert_same_hits(ix.search(vec, k=5), ix.search(wave, k=5))
    for query in (QUERIES[0], vec):
        hit = ix.search(query, k=1)[0]
        windows, scores = ix.file_scores(hit.id, query)
        assert {w.path for w in windows} == {hit.path} and [w.start for w in windows] == sorted(w.start for w in windows)
        assert len(windows) == int(np.sum(ix.table["file_id"] == ix.table["file_id"][np.searchsorted(ix.table["id"], hit.id)]))
        at = [w.id for w in windows].index(hit.id)
        assert scores[at] == pytest.approx(hit.score, abs=1e-5) and scores.max() == pytest.approx(hit.score, abs=1e-5)
    with pytest.raises(KeyError):
        ix.file_scores(10**9, QUERIES[0])
    ix.close()
