"""Several relevant files per query (DCASE 2025): hand-computed AP@16 cases, the annotations file, per-query
results, bootstrap intervals and paired comparison of the multi-relevance metric."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from hade.errors import InputError
from hade.eval.per_query import attach_relevance, load_per_query, multi_values, per_query_results, save_per_query
from hade.eval.relevance import (RelevanceMap, average_precision, multi_relevance_metrics, read_relevance,
                                 relevant_ranks, resolve_relevance)
from hade.eval.stats import bootstrap_cis, check_same_split, compare, compare_many, directions, Named


def _rmap(rows: list[list[int]], query_text: list[int] | None = None) -> RelevanceMap:
    offsets = np.cumsum([0] + [len(r) for r in rows])
    return RelevanceMap(np.asarray(query_text or list(range(len(rows)))), offsets,
                        np.asarray([c for r in rows for c in r], dtype=np.int64))


def _row_with_ranks(ranks_of: dict[int, int], num_audios: int = 40) -> np.ndarray:
    """A score row in which clip c (key) is at 1-based rank r (value); other clips fill the other places."""
    order = [None] * num_audios
    for clip, rank in ranks_of.items():
        order[rank - 1] = clip
    rest = iter(c for c in range(num_audios) if c not in ranks_of)
    order = [c if c is not None else next(rest) for c in order]
    row = np.empty(num_audios)
    row[order] = np.linspace(1.0, 0.0, num_audios)
    return row


@pytest.mark.parametrize("ranks,expected16,expected10", [
    ({7: 3}, 1 / 3, 1 / 3),  # one relevant file at rank 3
    ({7: 1, 8: 4, 9: 20}, (1 / 1 + 2 / 4) / 3, (1 / 1 + 2 / 4) / 3),  # several, one beyond the cut-off
    ({7: 2, 8: 17}, (1 / 2) / 2, (1 / 2) / 2),  # rank 17 counts only in R
    ({7: 1, 8: 16}, (1 + 2 / 16) / 2, 1 / 2),  # rank 16 is inside the cut-off of mAP@16, outside mAP@10
    ({7: 12, 3: 5}, (1 / 5 + 2 / 12) / 2, (1 / 5) / 2),  # listed out of rank order: ranks are sorted
    ({c: c + 1 for c in range(20)}, 16 / 20, 10 / 20),  # R = 20 > 16: normalised by R, not min(R, 16)
])
def test_hand_computed_average_precision(ranks, expected16, expected10):
    scores = _row_with_ranks(ranks)[None, :]
    rmap = _rmap([list(ranks)])
    got = relevant_ranks(scores, rmap)
    assert got.tolist() == list(ranks.values())
    assert average_precision(got, rmap.offsets, 16)[0] == pytest.approx(expected16, abs=1e-15)
    metrics = multi_relevance_metrics(scores, rmap)
    assert metrics["mAP@16"] == pytest.approx(100 * expected16, abs=1e-12)
    assert metrics["mAP@10"] == pytest.approx(100 * expected10, abs=1e-12)
    assert metrics["num_queries"] == 1 and metrics["relevant_per_query"] == len(ranks)


def test_ties_follow_the_stated_rule_ascending_clip_index():
    """Equal scores: lower clip index first. All five clips tie; relevant clips 2 and 0 take ranks 3 and 1.
    Then clip 4 (relevant) ties with clip 1 (not) at the top: clip 1 comes first, clip 4 is second."""
    flat = np.zeros((1, 5))
    rmap = _rmap([[2, 0]])
    assert relevant_ranks(flat, rmap).tolist() == [3, 1]
    assert multi_relevance_metrics(flat, rmap)["mAP@16"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)
    row = np.array([[0.5, 0.9, 0.1, 0.2, 0.9]])
    assert relevant_ranks(row, _rmap([[4]])).tolist() == [2]


def test_mean_over_queries_equals_an_independent_sorting_implementation():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 50)).round(1)  # rounding makes ties
    rows = [sorted(rng.choice(50, size=int(rng.integers(1, 25)), replace=False).tolist()) for _ in range(30)]
    rmap = _rmap(rows)
    expected = []
    for q, relevant in enumerate(rows):
        order = np.argsort(-scores[q], kind="stable").tolist()  # descending, ties by index
        positions = sorted(order.index(c) + 1 for c in relevant)
        expected.append(sum((i + 1) / p for i, p in enumerate(positions) if p <= 16) / len(relevant))
    assert multi_relevance_metrics(scores, rmap)["mAP@16"] == pytest.approx(100 * np.mean(expected), abs=1e-10)


def _write(path, rows, header=("query", "audio_filenames")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_the_annotations_file_is_read_and_matched_to_the_split(tmp_path):
    path = _write(tmp_path / "rel.csv", [["a dog, barking", "['f1.wav', \"it's.wav\"]"], ["rain", "['f0.wav']"]])
    rel = read_relevance(path)
    assert rel.queries == ["a dog, barking", "rain"] and rel.files == [["f1.wav", "it's.wav"], ["f0.wav"]]
    captions = ["rain", "x", "a dog, barking", "rain"]
    rmap = resolve_relevance(rel, captions, ["f0.wav", "f1.wav", "it's.wav"])
    assert rmap.query_text.tolist() == [2, 0]  # first caption with the text
    assert rmap.clips.tolist() == [1, 2, 0] and rmap.offsets.tolist() == [0, 2, 3]


@pytest.mark.parametrize("rows,header,match", [
    ([["q", "['a.wav']"]], ("caption", "files"), r"columns \['query', 'audio_filenames'\]"),
    ([["q", "a.wav, b.wav"]], ("query", "audio_filenames"), r"line 2: audio_filenames must be a list"),
    ([["q", "[]"]], ("query", "audio_filenames"), r"line 2: the query has no relevant file"),
    ([["q", "['a.wav', 'a.wav']"]], ("query", "audio_filenames"), r"line 2: 'a.wav' is listed twice"),
    ([["q", "[1, 2]"]], ("query", "audio_filenames"), r"line 2: audio_filenames must be a list of file names"),
    ([], ("query", "audio_filenames"), r"no query rows"),
])
def test_bad_annotation_files_are_one_line_errors(tmp_path, rows, header, match):
    with pytest.raises(InputError, match=match):
        read_relevance(_write(tmp_path / "bad.csv", rows, header))


def test_unknown_queries_files_bad_bytes_and_huge_fields_are_named(tmp_path):
    rel = read_relevance(_write(tmp_path / "r.csv", [["rain", "['f9.wav']"]]))
    with pytest.raises(InputError, match=r"line 2: file 'f9.wav' \(dropped: it could not be decoded\)"):
        resolve_relevance(rel, ["rain"], ["f0.wav"], dropped=["f9.wav"])
    with pytest.raises(InputError, match=r"line 2: the query 'rain' is not a caption"):
        resolve_relevance(rel, ["snow"], ["f9.wav"])
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"query,audio_filenames\ncaf\xe9,\"['a.wav']\"\n")
    with pytest.raises(InputError, match=r"latin.csv, line 2: not UTF-8 text \(byte 0xe9"):
        read_relevance(latin)
    huge = _write(tmp_path / "huge.csv", [["x" * 200_000, "['a.wav']"]])
    with pytest.raises(InputError, match=r"huge.csv, line \d+: malformed CSV"):
        read_relevance(huge)


def _evaluated(seed: int, rmap: RelevanceMap, clips: int = 12):
    rng = np.random.default_rng(seed)
    text_clip = np.repeat(np.arange(clips), 2)
    scores = rng.normal(size=(text_clip.size, clips))
    scores[np.arange(text_clip.size), text_clip] += 1.0
    captions = [f"caption {t}" for t in range(text_clip.size)]
    pq = per_query_results(scores, text_clip, [f"id{a}" for a in range(clips)], None, captions, "evaluation")
    ranks = relevant_ranks(scores, rmap)
    return scores, attach_relevance(pq, rmap.query_text, rmap.offsets, rmap.clips, ranks)


RMAP = _rmap([[0, 3], [5], [1, 2, 9], [7, 8], [4, 11, 6, 10]], query_text=[0, 5, 9, 14, 22])


def test_per_query_values_round_trip_and_reproduce_the_metric(tmp_path):
    scores, pq = _evaluated(0, RMAP)
    save_per_query(tmp_path / "m.per_query.npz", pq)
    back = load_per_query(tmp_path / "m.per_query.npz")
    assert back.has_relevance and np.array_equal(back.rel_rank, pq.rel_rank)
    qv = multi_values(back)
    expected = multi_relevance_metrics(scores, RMAP)
    for m in ("mAP@16", "mAP@10"):
        assert 100 * np.mean(qv.values[m]) == pytest.approx(expected[m], abs=1e-12)
    assert qv.unit.tolist() == [0, 2, 4, 7, 11]  # the clip of each query's caption
    plain = per_query_results(scores, pq.text_clip, pq.clip_ids)
    save_per_query(tmp_path / "p.per_query.npz", plain)
    assert not load_per_query(tmp_path / "p.per_query.npz").has_relevance and multi_values(plain) is None


def test_bootstrap_and_comparison_cover_the_multi_relevance_metric():
    scores_a, a = _evaluated(0, RMAP)
    _, b = _evaluated(1, RMAP)
    cis = bootstrap_cis(a, resamples=300, seed=0)
    point = multi_relevance_metrics(scores_a, RMAP)["mAP@16"]
    lo, hi = cis.by_direction["t2a_multi"]["mAP@16"]
    assert lo <= point <= hi and lo < hi
    result = compare(a, b, resamples=200, permutations=500, seed=0)
    row = result.by_direction["t2a_multi"]["mAP@16"]
    assert row.diff == pytest.approx(row.a - row.b) and 0 < row.p <= 1
    assert row.a == pytest.approx(point)
    many = compare_many([Named("a", directions(a)), Named("b", directions(b)), Named("c", directions(b))], "a",
                        resamples=100, permutations=100)
    assert many.by_system["c"]["t2a_multi"]["mAP@16"].p_holm is not None
    other = _rmap([[1]], query_text=[0])
    _, c = _evaluated(1, other)
    with pytest.raises(InputError, match="relevance annotations differ"):
        check_same_split(a, c)
