"""DCASE submission files: write, read, score; the round trip reproduces hade eval's metrics."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from hade.errors import InputError
from hade.eval.dcase import HEADER, read_dcase_csv, score_dcase, write_dcase_csv
from hade.eval.metrics import retrieval_metrics
from hade.eval.per_query import per_query_results


def _setup(clips: int = 30, seed: int = 0, duplicate: bool = True):
    rng = np.random.default_rng(seed)
    text_clip = np.repeat(np.arange(clips), 5)
    captions = [f"clip {c}, caption {k} \"quoted\"" for c in range(clips) for k in range(5)]
    if duplicate:  # the same text on three clips, as real data has
        for t in (3, 17, 42):
            captions[t] = "a dog barks"
    names = [f"file {a:03d}.wav" for a in range(clips)]
    scores = rng.normal(size=(text_clip.size, clips))
    scores[np.arange(text_clip.size), text_clip] += 2.0
    pq = per_query_results(scores, text_clip, [f"id{a}" for a in range(clips)], names, captions)
    return scores, text_clip, captions, names, pq


def test_round_trip_write_score_equals_hade_eval(tmp_path):
    scores, text_clip, captions, names, pq = _setup()
    path = tmp_path / "sub.csv"
    write_dcase_csv(path, captions, pq)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER == ["caption"] + [f"fname_{i}" for i in range(1, 11)]
    assert len(rows) == 1 + len(captions) and rows[1][0] == captions[0] and len(rows[1]) == 11
    result = score_dcase(path, captions, text_clip, names, resamples=200, seed=0)
    expected = retrieval_metrics(scores, text_clip).t2a
    for name in ("R@1", "R@5", "R@10", "mAP@10"):
        assert result.t2a[name] == expected[name], name
        lo, hi = result.ci.by_direction["t2a"][name]
        assert lo <= expected[name] <= hi
    assert result.num_listed == int((pq.t2a_rank <= 10).sum())
    assert score_dcase(path, captions, text_clip, names, resamples=0).ci is None
    assert "ci" not in score_dcase(path, captions, text_clip, names, resamples=0).to_dict()
    assert set(result.to_dict()) == {"t2a", "submission", "num_listed", "ci"}


def test_rows_are_matched_by_text_in_any_order(tmp_path):
    scores, text_clip, captions, names, pq = _setup(duplicate=False)
    write_dcase_csv(tmp_path / "a.csv", captions, pq)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    body = lines[1:]
    np.random.default_rng(1).shuffle(body)
    (tmp_path / "b.csv").write_text("\n".join([lines[0]] + body) + "\n")
    a = score_dcase(tmp_path / "a.csv", captions, text_clip, names, resamples=0)
    b = score_dcase(tmp_path / "b.csv", captions, text_clip, names, resamples=0)
    assert a.t2a == b.t2a


def test_duplicate_captions_are_one_query_each_matched_in_order(tmp_path):
    scores, text_clip, captions, names, pq = _setup()
    path = tmp_path / "sub.csv"
    write_dcase_csv(path, captions, pq)
    rows = read_dcase_csv(path)
    dup = [i for i, (text, _) in enumerate(rows) if text == "a dog barks"]
    assert dup == [3, 17, 42]
    # a perfect answer for the three "a dog barks" rows, each for its own clip (in split order)
    lines = path.read_text().splitlines()
    for i in dup:
        own = names[text_clip[i]]
        others = [n for n in names if n != own][:9]
        lines[1 + i] = ",".join(["a dog barks", own] + others)
    path.write_text("\n".join(lines) + "\n")
    pos_ok = score_dcase(path, captions, text_clip, names, resamples=0)
    hits = (pq.t2a_rank == 1).sum() - sum(pq.t2a_rank[i] == 1 for i in dup) + 3
    assert pos_ok.t2a["R@1"] == 100 * hits / len(captions)


def test_bad_submissions_are_clear_errors(tmp_path):
    _, text_clip, captions, names, pq = _setup(clips=12, duplicate=False)
    good = tmp_path / "good.csv"
    write_dcase_csv(good, captions, pq)
    lines = good.read_text().splitlines()
    cases = {
        "header": (["caption,file_1"] + lines[1:], r"expected the header caption,fname_1,"),
        "missing": (lines[:-1], r"no row for caption 59"),
        "extra": (lines + ["not a caption," + ",".join(names[:10])], r"1 row\(s\) for captions not in the split"),
        "changed text": (lines[:1] + ["a caption not in the split," + names[0]] + lines[2:], r"no row for caption 0"),
        "twice": (lines[:1] + [f'"{captions[0]}",{names[0]},{names[0]}'] + lines[2:],
                  r"line 2: a file name is listed twice"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.csv"
        path.write_text("\n".join(content) + "\n")
        with pytest.raises(InputError, match=match):
            score_dcase(path, captions, text_clip, names, resamples=0)
    unknown = tmp_path / "unknown_name.csv"
    unknown.write_text("\n".join(lines[:1] + [f'"{captions[0]}",nope.wav'] + lines[2:]) + "\n")
    with pytest.raises(InputError, match=r"unknown_name.csv, row 1 .*\['nope.wav'\] are not clips of the split"):
        score_dcase(unknown, captions, text_clip, names, resamples=0)
    with pytest.raises(InputError, match="cannot read"):
        read_dcase_csv(tmp_path / "absent.csv")
    eleven = tmp_path / "eleven.csv"
    eleven.write_text(",".join(HEADER) + "\n" + "x," + ",".join(names[:11]) + "\n")
    with pytest.raises(InputError, match="line 2: more than 10 file names"):
        read_dcase_csv(eleven)


@pytest.mark.parametrize("body,match", [
    (b"caf\xe9 bells,a.wav\n", r"latin1.csv, line 2: not UTF-8 text \(byte 0xe9 at offset"),
    (b"\xff\xfe,a.wav\n", r"latin1.csv, line 2: not UTF-8 text \(byte 0xff"),
    (b"x" * 200_000 + b",a.wav\n", r"latin1.csv, line \d+: malformed CSV \(field larger than field limit"),
])
def test_undecodable_bytes_and_huge_captions_are_one_line_errors(tmp_path, body, match):
    """issue 24 item 6: these were a UnicodeDecodeError and a _csv.Error traceback."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(",".join(HEADER).encode() + b"\n" + body)
    with pytest.raises(InputError, match=match):
        read_dcase_csv(path)
