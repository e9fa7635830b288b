"""DCASE 2025 submission files (score matrices): write, read, score; the round trip reproduces hade eval."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from hade.errors import InputError
from hade.eval.dcase2025 import INDEX, is_score_csv, read_score_csv, score_2025, write_score_csv
from hade.eval.metrics import retrieval_metrics
from hade.eval.relevance import Relevance, multi_relevance_metrics, resolve_relevance


def _setup(dtype=np.float32, clips: int = 20):
    rng = np.random.default_rng(0)
    text_clip = np.repeat(np.arange(clips), 3)
    captions = [f"clip {c}, caption {k} \"q\"" for c in range(clips) for k in range(3)]
    captions[4] = captions[10] = "a dog barks"  # one text on two clips: one row, the same scores
    names = [f"file, {a:03d}.wav" for a in range(clips)]
    scores = rng.normal(size=(text_clip.size, clips)).round(1).astype(dtype)  # rounding: ties
    scores[10] = scores[4]
    scores[np.arange(text_clip.size), text_clip] += 1.5
    scores[10] = scores[4]  # identical texts have identical rows
    return scores, text_clip, captions, names


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_scores_exactly_as_hade_eval(tmp_path, dtype):
    scores, text_clip, captions, names = _setup(dtype)
    path = tmp_path / "sub.csv"
    write_score_csv(path, captions, names, scores)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [INDEX, *names] and len(rows) == 1 + len(set(captions))
    assert is_score_csv(path)
    rel = Relevance(["a dog barks", captions[0]], [[names[1], names[3], names[7]], [names[0]]], [2, 3], "rel.csv")
    result = score_2025(path, captions, text_clip, names, rel, resamples=100, seed=0)
    expected = retrieval_metrics(scores, text_clip).t2a
    for m in ("R@1", "R@5", "R@10", "mAP@10"):
        assert result.t2a[m] == expected[m], m
    multi = multi_relevance_metrics(scores, resolve_relevance(rel, captions, names))
    assert result.t2a_multi["mAP@16"] == multi["mAP@16"] and result.t2a_multi["num_queries"] == 2
    assert set(result.to_dict()["ci"]) == {"t2a", "t2a_multi", "settings"} and result.to_dict()["format"] == "scores"
    # columns in another order: the same ranks (ties still by the split's clip order)
    order = np.random.default_rng(1).permutation(len(names))
    write_score_csv(tmp_path / "perm.csv", captions, [names[i] for i in order], scores[:, order])
    again = score_2025(tmp_path / "perm.csv", captions, text_clip, names, rel, resamples=0)
    assert again.t2a == result.t2a and again.t2a_multi["mAP@16"] == result.t2a_multi["mAP@16"]


def _rewrite(src, dst, edit):
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    edit(rows)
    with open(dst, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return dst


@pytest.mark.parametrize("edit,match", [
    (lambda r: r[0].pop(), r"no column for 1 clip"),
    (lambda r: r[0].__setitem__(1, "other.wav"), r"no column for 1 clip"),
    (lambda r: r.append(list(r[1])), r"line 61: the query .* has a second row"),
    (lambda r: r[2].__setitem__(3, "high"), r"line 3: a score is not a number"),
    (lambda r: r[2].__setitem__(3, "nan"), r"line 3: NaN"),
    (lambda r: r[2].pop(), r"line 3: 20 cells, expected 21"),
    (lambda r: r.pop(5), r"no row for 1 caption text"),
])
def test_bad_submissions_are_one_line_errors(tmp_path, edit, match):
    scores, text_clip, captions, names = _setup()
    write_score_csv(tmp_path / "ok.csv", captions, names, scores)
    bad = _rewrite(tmp_path / "ok.csv", tmp_path / "bad.csv", edit)
    with pytest.raises(InputError, match=match):
        score_2025(bad, captions, text_clip, names, resamples=0)


def test_extra_columns_and_unreadable_files(tmp_path):
    scores, text_clip, captions, names = _setup()
    write_score_csv(tmp_path / "ok.csv", captions, names + ["extra.wav"],
                    np.concatenate([scores, np.zeros((len(captions), 1), np.float32)], 1))
    with pytest.raises(InputError, match=r"\['extra.wav'\] are not clips of the split"):
        read_score_csv(tmp_path / "ok.csv", names)
    (tmp_path / "ff.csv").write_bytes(b"index,a.wav\n\xffq,1.0\n")
    with pytest.raises(InputError, match=r"ff.csv, line 2: not UTF-8 text \(byte 0xff"):
        read_score_csv(tmp_path / "ff.csv", ["a.wav"])
