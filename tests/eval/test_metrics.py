"""Exact-number tests for hade.eval.metrics (hand-computed cases, brute force, enumeration)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from hade.errors import InputError
from hade.eval.metrics import (
    TIE_RULE,
    a2t_metrics,
    chance_metrics,
    format_metrics_table,
    rank_a2t,
    rank_t2a,
    retrieval_metrics,
    t2a_metrics,
)

EPS = 1e-12


def pct(fr: Fraction) -> float:
    return float(100 * fr)


# --------------------------------------------------------------------------- hand case
# 3 clips, 8 captions: clip 0 has 5 captions (texts 0-4), clip 1 has 2 (texts 5, 6),
# clip 2 has 1 (text 7).  Several equal scores where the tie rule decides the rank.
HAND_SCORES = np.array(
    [
        [0.5, 0.5, 0.1],  # t0 -> clip0: tie with audio 1, lower index wins -> rank 1
        [0.2, 0.9, 0.2],  # t1 -> clip0: 0.9 above; tie with audio 2 (after) -> rank 2
        [0.3, 0.3, 0.3],  # t2 -> clip0: all tied, own index 0 -> rank 1
        [0.1, 0.4, 0.7],  # t3 -> clip0: rank 3
        [0.6, 0.0, 0.0],  # t4 -> clip0: rank 1
        [0.5, 0.5, 0.5],  # t5 -> clip1: all tied, audio 0 before -> rank 2
        [0.8, 0.2, 0.9],  # t6 -> clip1: rank 3
        [0.4, 0.4, 0.4],  # t7 -> clip2: all tied, own index 2 -> rank 3
    ]
)
HAND_CLIP = np.array([0, 0, 0, 0, 0, 1, 1, 2])

# Column 0 (clip 0 queries), by caption: [.5 .2 .3 .1 .6 .5 .8 .4]
#   order: t6 .8, t4 .6, t0 .5, t5 .5 (tie: t0 first), t7 .4, t2 .3, t1 .2, t3 .1
#   relevant t0..t4 -> sorted ranks [2, 3, 6, 7, 8]
# Column 1 (clip 1), by caption: [.5 .9 .3 .4 .0 .5 .2 .4]
#   order: t1, t0 (.5), t5 (.5, after t0), t3 (.4), t7 (.4), t2, t6, t4 -> relevant t5, t6 -> [3, 7]
# Column 2 (clip 2), by caption: [.1 .2 .3 .7 .0 .5 .9 .4]
#   order: t6, t3, t5, t7, ... -> relevant t7 -> [4]
HAND_A2T_RANKS = [[2, 3, 6, 7, 8], [3, 7], [4]]
HAND_T2A_RANKS = [1, 2, 1, 3, 1, 2, 3, 3]


def test_hand_ranks():
    assert rank_t2a(HAND_SCORES, HAND_CLIP).tolist() == HAND_T2A_RANKS
    got = rank_a2t(HAND_SCORES, HAND_CLIP)
    assert [g.tolist() for g in got] == HAND_A2T_RANKS
    assert all(g.dtype == np.int64 for g in got)


def test_hand_t2a_metrics():
    m = t2a_metrics(HAND_SCORES, HAND_CLIP)
    assert m["R@1"] == 37.5  # 3 of 8 at rank 1
    assert m["R@5"] == m["R@10"] == m["R@50"] == 100.0
    # mAP@10 = (1 + 1/2 + 1 + 1/3 + 1 + 1/2 + 1/3 + 1/3) / 8 = 5/8
    assert m["mAP@10"] == pytest.approx(62.5, abs=EPS)
    assert m["medR"] == 2.0  # sorted [1,1,1,2,2,3,3,3]
    assert m["meanR"] == 2.0  # 16 / 8
    assert m["num_queries"] == 8
    assert m["tie_rule"] == TIE_RULE


def test_hand_a2t_metrics():
    m = a2t_metrics(HAND_SCORES, HAND_CLIP, ks=(1, 5, 10))
    # best ranks [2, 3, 4]
    assert m["R@1"] == 0.0
    assert m["R@5"] == 100.0 and m["R@10"] == 100.0
    ap0 = Fraction(1, 5) * (Fraction(1, 2) + Fraction(2, 3) + Fraction(3, 6) + Fraction(4, 7) + Fraction(5, 8))
    assert ap0 == Fraction(481, 840)
    ap1 = Fraction(1, 2) * (Fraction(1, 3) + Fraction(2, 7))  # 13/42
    ap2 = Fraction(1, 4)
    assert m["mAP@10"] == pytest.approx(pct((ap0 + ap1 + ap2) / 3), abs=EPS)  # 951/2520
    assert m["mAP@10"] == pytest.approx(100 * 951 / 2520, abs=EPS)
    assert m["medR"] == 3.0 and m["meanR"] == 3.0
    # true recall: clip0 2/5 in top 5, clip1 1/2, clip2 1/1
    assert m["recall_fraction@1"] == 0.0
    assert m["recall_fraction@5"] == pytest.approx(pct((Fraction(2, 5) + Fraction(1, 2) + 1) / 3), abs=EPS)
    assert m["recall_fraction@10"] == 100.0
    assert m["num_queries"] == 3 and m["num_clips_without_captions"] == 0


def test_map_cutoff_and_map_k():
    # with map_k=5 only ranks <= 5 contribute: clip0 (1/5)(1/2 + 2/3), clip1 (1/2)(1/3), clip2 1/4
    m = a2t_metrics(HAND_SCORES, HAND_CLIP, map_k=5)
    exp = (Fraction(1, 5) * (Fraction(1, 2) + Fraction(2, 3)) + Fraction(1, 6) + Fraction(1, 4)) / 3
    assert m["mAP@5"] == pytest.approx(pct(exp), abs=EPS)
    t = t2a_metrics(HAND_SCORES, HAND_CLIP, map_k=2)
    # ranks [1,2,1,3,1,2,3,3] -> 1 + 1/2 + 1 + 0 + 1 + 1/2 + 0 + 0 = 4
    assert t["mAP@2"] == pytest.approx(50.0, abs=EPS)


def test_laion_unsorted_trap():
    # clip 0 has 5 captions; in caption order their 0-based ranks are [5, 0, 13, 14, 15]
    # (caption 1 is ranked first, caption 0 sixth, captions 2-4 outside the top 10).
    # clip 1 has 11 captions (texts 5..15).
    nt = 16
    clip = np.array([0] * 5 + [1] * 11)
    s = np.zeros((nt, 2))
    col0 = np.full(nt, -1.0)
    col0[1] = 1.0
    col0[5:9] = [0.9, 0.8, 0.7, 0.6]
    col0[0] = 0.5
    col0[9:16] = [0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2]
    s[:, 0] = col0
    s[5:, 1] = 1.0  # clip 1: its 11 captions tied at the top -> ranks 1..11 by index
    ranks = rank_a2t(s, clip)
    assert ranks[0].tolist() == [1, 6, 14, 15, 16]
    assert ranks[1].tolist() == list(range(1, 12))
    correct0 = (Fraction(1, 1) + Fraction(2, 6)) / 5  # sorted ranks: 4/15 ~ 0.267
    laion0 = (Fraction(1, 6) + Fraction(2, 1)) / 5  # unsorted (caption order): 13/30 ~ 0.433
    ap1 = Fraction(10, 11)  # (1/11) * sum_{i<=10} i/i
    m = a2t_metrics(s, clip)
    assert m["mAP@10"] == pytest.approx(pct((correct0 + ap1) / 2), abs=EPS)
    assert m["mAP@10"] != pytest.approx(pct((laion0 + ap1) / 2), abs=1e-6)
    # single-clip view of the brief's example: 0-based [5, 0] -> (1/1 + 2/6) / |Rel|
    assert correct0 == Fraction(4, 15)


def test_all_tied_and_medr_even_count():
    # all scores equal: the tie rule alone decides; caption i of clip i gets rank i+1 both ways
    s = np.zeros((4, 4), dtype=np.float32)
    clip = np.arange(4)
    assert rank_t2a(s, clip).tolist() == [1, 2, 3, 4]
    assert [r.tolist() for r in rank_a2t(s, clip)] == [[1], [2], [3], [4]]
    r = retrieval_metrics(s, clip)
    for d in ("t2a", "a2t"):
        assert r.direction(d)["medR"] == 2.0  # floor(median [1,2,3,4]) = floor(2.5) = 2
        assert r.direction(d)["meanR"] == 2.5
        assert r.direction(d)["R@1"] == 25.0
    # two queries with ranks 1 and 4: median 2.5 -> medR 2 (= floor(median(r-1)) + 1 = floor(1.5) + 1)
    s2 = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    clip2 = np.array([0, 3])
    assert rank_t2a(s2, clip2).tolist() == [1, 4]
    assert t2a_metrics(s2, clip2)["medR"] == 2.0
    assert t2a_metrics(s2, clip2)["meanR"] == 2.5


def test_perfect_scores_give_100():
    clip = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 3])  # 5, 2, 1, 3 captions
    s = np.zeros((clip.size, 4))
    s[np.arange(clip.size), clip] = 1.0
    r = retrieval_metrics(s, clip, ks=(1, 5, 10))
    for d in ("t2a", "a2t"):
        for key in ("R@1", "R@5", "R@10", "mAP@10"):
            assert r.direction(d)[key] == 100.0, (d, key)
        assert r.direction(d)["medR"] == 1.0 and r.direction(d)["meanR"] == 1.0
    assert r.a2t["recall_fraction@5"] == 100.0
    assert r.a2t["recall_fraction@10"] == 100.0
    # true recall at 1 cannot be 100 with several captions: mean(1/5, 1/2, 1, 1/3)
    exp = (Fraction(1, 5) + Fraction(1, 2) + 1 + Fraction(1, 3)) / 4
    assert r.a2t["recall_fraction@1"] == pytest.approx(pct(exp), abs=EPS)
    assert r.num_texts == 11 and r.num_audios == 4 and r.tie_rule == TIE_RULE


def _brute_ranks(s, clip):
    nt, na = s.shape
    t2a = []
    for t in range(nt):
        order = np.argsort(-s[t], kind="stable")
        t2a.append(int(np.flatnonzero(order == clip[t])[0]) + 1)
    a2t = []
    for a in range(na):
        order = np.argsort(-s[:, a], kind="stable")
        pos = np.empty(nt, dtype=np.int64)
        pos[order] = np.arange(1, nt + 1)
        a2t.append(np.sort(pos[clip == a]).tolist())
    return t2a, a2t


def test_ranks_match_stable_sort_with_many_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        na = 7
        clip = np.concatenate([np.arange(na), rng.integers(0, na, size=10)])
        s = rng.integers(0, 3, size=(clip.size, na)).astype(np.float64)  # heavy ties
        t2a, a2t = _brute_ranks(s, clip)
        assert rank_t2a(s, clip).tolist() == t2a
        assert [r.tolist() for r in rank_a2t(s, clip)] == a2t


def test_clip_without_captions_is_t2a_distractor():
    s = np.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.1]])
    clip = np.array([0, 1])  # clip 2 has no caption
    r = retrieval_metrics(s, clip, ks=(1, 2))
    assert rank_t2a(s, clip).tolist() == [2, 1]
    assert [x.tolist() for x in rank_a2t(s, clip)] == [[1], [1], []]
    assert r.t2a["R@1"] == 50.0
    assert r.a2t["num_queries"] == 2 and r.a2t["num_clips_without_captions"] == 1
    assert r.a2t["R@1"] == 100.0


def test_deterministic_and_numpy_torch_identical():
    rng = np.random.default_rng(1)
    clip = np.repeat(np.arange(40), rng.integers(1, 7, size=40))
    s = rng.standard_normal((clip.size, 40)).astype(np.float32)
    s[::3, ::2] = 0.25  # some exact ties
    a = retrieval_metrics(s, clip)
    b = retrieval_metrics(s, clip)
    c = retrieval_metrics(torch.from_numpy(s.copy()), torch.from_numpy(clip.copy()))
    d = retrieval_metrics(torch.from_numpy(s.copy()).double(), clip.tolist())  # float32 -> 64 exact
    assert a == b == c == d
    assert [x.tolist() for x in rank_a2t(s, clip)] == [x.tolist() for x in rank_a2t(torch.tensor(s), clip)]


def test_large_matrix_matches_argsort():
    rng = np.random.default_rng(2)
    na = 1000
    clip = np.repeat(np.arange(na), 5)
    s = rng.standard_normal((clip.size, na)).astype(np.float32)
    s = np.round(s, 2)  # plenty of ties
    r_t2a = rank_t2a(s, clip)
    order = np.argsort(-s, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(na)[None, :].repeat(clip.size, 0), axis=1)
    assert np.array_equal(r_t2a, pos[np.arange(clip.size), clip] + 1)
    m = retrieval_metrics(s, clip)
    assert m.a2t["num_queries"] == na
    # spot-check a2t ranks of a few clips by stable argsort on their columns
    a2t = rank_a2t(s, clip)
    for a in (0, 17, 999):
        o = np.argsort(-s[:, a], kind="stable")
        p = np.empty(clip.size, dtype=np.int64)
        p[o] = np.arange(1, clip.size + 1)
        assert a2t[a].tolist() == np.sort(p[clip == a]).tolist()


# --------------------------------------------------------------------------- chance
def test_chance_matches_exhaustive_enumeration():
    # 3 clips, 5 captions: clip 0 has 3, clips 1 and 2 one each.  Enumerate every permutation
    # for every query at once (each query's marginal is then uniform over permutations, so the
    # average of the metric means equals the mean of the expectations).
    clip = np.array([0, 0, 0, 1, 2])
    nt, na = clip.size, 3
    ks = (1, 2, 3)
    for map_k in (10, 2):
        ch = chance_metrics(nt, na, clip, ks=ks, map_k=map_k)
        key = f"mAP@{map_k}"
        acc_t = {}
        perms = list(itertools.permutations(range(na)))
        for p in perms:
            s = np.tile(np.array(p, dtype=np.float64), (nt, 1))
            m = t2a_metrics(s, clip, ks=ks, map_k=map_k)
            for k in [f"R@{k}" for k in ks] + [key, "meanR"]:
                acc_t[k] = acc_t.get(k, 0.0) + m[k] / len(perms)
        for k, v in acc_t.items():
            assert ch.t2a[k] == pytest.approx(v, abs=1e-9), k
        acc_a = {}
        perms = list(itertools.permutations(range(nt)))
        for p in perms:
            s = np.tile(np.array(p, dtype=np.float64)[:, None], (1, na))
            m = a2t_metrics(s, clip, ks=ks, map_k=map_k)
            keys = [f"R@{k}" for k in ks] + [f"recall_fraction@{k}" for k in ks] + [key, "meanR"]
            for k in keys:
                acc_a[k] = acc_a.get(k, 0.0) + m[k] / len(perms)
        for k, v in acc_a.items():
            assert ch.a2t[k] == pytest.approx(v, abs=1e-9), k
    assert ch.t2a["medR"] is None and ch.a2t["medR"] is None


def test_chance_closed_forms():
    clip = np.repeat(np.arange(1045), 5)
    ch = chance_metrics(clip.size, 1045, clip)
    assert ch.t2a["R@1"] == pytest.approx(100 / 1045, abs=EPS)
    assert ch.t2a["R@10"] == pytest.approx(1000 / 1045, abs=EPS)
    h10 = sum(1 / r for r in range(1, 11))
    assert ch.t2a["mAP@10"] == pytest.approx(100 * h10 / 1045, abs=EPS)
    nt = clip.size
    assert ch.a2t["R@1"] == pytest.approx(100 * 5 / nt, abs=EPS)
    assert ch.a2t["R@10"] == pytest.approx(100 * (1 - math.comb(nt - 5, 10) / math.comb(nt, 10)), abs=EPS)
    assert ch.a2t["meanR"] == pytest.approx((nt + 1) / 6, abs=EPS)


def test_chance_a2t_map_vs_subset_enumeration():
    # m relevant among nt: average the exact AP over all C(nt, m) position subsets
    nt, m, K = 14, 4, 10
    tot = Fraction(0)
    n = 0
    for pos in itertools.combinations(range(1, nt + 1), m):
        tot += sum((Fraction(i, p) for i, p in enumerate(pos, 1) if p <= K), Fraction(0)) / m
        n += 1
    clip = np.array([0] * m + [1] * (nt - m))
    ch = chance_metrics(nt, 2, clip)
    ap1 = Fraction(0)  # clip 1 expectation, same formula by enumeration
    m1 = nt - m
    n1 = 0
    for pos in itertools.combinations(range(1, nt + 1), m1):
        ap1 += sum((Fraction(i, p) for i, p in enumerate(pos, 1) if p <= K), Fraction(0)) / m1
        n1 += 1
    exp = (tot / n + ap1 / n1) / 2
    assert ch.a2t["mAP@10"] == pytest.approx(pct(exp), abs=EPS)


# --------------------------------------------------------------------------- table
def test_format_table():
    r = retrieval_metrics(HAND_SCORES, HAND_CLIP)
    ch = chance_metrics(8, 3, HAND_CLIP)
    txt = format_metrics_table(r, ch)
    lines = txt.splitlines()
    for col in ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"):
        assert col in lines[0]
    assert lines[2].startswith("T2A ") and lines[3].startswith("A2T ")
    assert lines[4].startswith("T2A chance") and lines[5].startswith("A2T chance")
    assert "37.50" in lines[2] and "62.50" in lines[2]
    assert lines[4].split()[-2] == "-"  # chance medR
    assert len({len(line) for line in lines[:6]}) == 1  # fixed width
    assert "ties:" in lines[-1]
    assert "chance" not in format_metrics_table(r)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "scores, clip, msg",
    [
        (np.zeros(3), np.array([0, 0, 0]), "2-D"),
        (np.zeros((2, 3, 1)), np.array([0, 0]), "2-D"),
        (np.zeros((0, 3)), np.array([], dtype=int), "empty"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), "3 entries"),
        (np.zeros((2, 3)), np.array([[0, 1]]), "1-D"),
        (np.zeros((2, 3)), np.array([0, 3]), "out of range"),
        (np.zeros((2, 3)), np.array([-1, 0]), "out of range"),
        (np.zeros((2, 3)), np.array([0.5, 1.0]), "integer"),
        (np.array([[0.1, np.nan, 0.2], [0.0, 0.0, 0.0]]), np.array([0, 1]), "NaN"),
        (torch.tensor([[0.1, float("nan")], [0.0, 0.0]]), np.array([0, 1]), "NaN"),
        (np.zeros((2, 2), dtype=complex), np.array([0, 1]), "real"),
    ],
)
def test_bad_inputs_raise(scores, clip, msg):
    for fn in (t2a_metrics, a2t_metrics, retrieval_metrics, rank_t2a, rank_a2t):
        with pytest.raises(InputError, match=msg):
            fn(scores, clip)


def test_bad_ks_and_chance_args():
    s = np.zeros((2, 2))
    with pytest.raises(InputError):
        t2a_metrics(s, [0, 1], ks=(0, 5))
    with pytest.raises(InputError):
        a2t_metrics(s, [0, 1], map_k=0)
    with pytest.raises(InputError):
        chance_metrics(3, 2, [0, 1])
    with pytest.raises(InputError):
        chance_metrics(2, 0, [0, 1])
