"""Exact audio–text retrieval metrics (text→audio and audio→text).

Inputs
------
``scores``: a ``[num_texts, num_audios]`` matrix (numpy array or torch tensor, real
numbers; higher = more similar).  ``text_clip``: ``[num_texts]`` integers, the index
of each caption's clip.  Every caption has exactly one clip; a clip may have any
number of captions (1, 5, more); a clip without captions is a valid distractor for
text→audio but cannot be an audio→text query (it is left out of the A2T means and
counted in ``num_clips_without_captions``).

Ties are broken by the rule stated in :mod:`hade.eval.ranks` (``TIE_RULE``).

Definitions (see ``/work/shared/reference/atr-systems.md`` §1)
---------------------------------------------------------------
T2A (each caption queries all clips, one relevant clip, rank ``r``):

* ``R@k``    = 100 · mean 1[r ≤ k]
* ``mAP@10`` = 100 · mean (1/r if r ≤ 10 else 0)
* ``medR``   = floor(median(r))  (= community ``floor(median(r-1)) + 1``)
* ``meanR``  = mean(r)

A2T (each clip queries all captions, relevant = its captions, sorted 1-based
ranks ``p_1 < p_2 < … < p_m``):

* ``R@k``    = 100 · mean 1[p_1 ≤ k]  (any-hit, DP / WavCaps / LAION "paper" protocol)
* ``recall_fraction@k`` = 100 · mean |{i: p_i ≤ k}| / m  (true recall, DCASE-2023 baseline)
* ``mAP@10`` = 100 · mean (1/m) Σ_{i: p_i ≤ 10} i / p_i  (normalised by the total number
  of relevant captions, DP/WavCaps/DCASE definition; ranks are *sorted* — LAION's
  unsorted variant over-estimates and is not reproduced here)
* ``medR`` / ``meanR`` on the best relevant rank ``p_1``.

R@k and mAP are percentages; ``medR`` / ``meanR`` are ranks (1 = best).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from hade.eval.chance import chance_metrics
from hade.eval.ranks import (DEFAULT_KS, TIE_RULE, a2t_text_ranks, check_ks, check_map_k, group_sorted, prepare,
                             rank_a2t, rank_t2a, t2a_ranks)
from hade.eval.results import RetrievalMetrics
from hade.eval.table import format_metrics_table

__all__ = [
    "TIE_RULE",
    "DEFAULT_KS",
    "rank_t2a",
    "rank_a2t",
    "t2a_metrics",
    "a2t_metrics",
    "retrieval_metrics",
    "RetrievalMetrics",
    "chance_metrics",
    "format_metrics_table",
]


# ----------------------------------------------------------------------------- metrics
def _pct_count(count: int, n: int) -> float:
    return float(Fraction(100 * int(count), int(n)))


def _pct_mean(values: np.ndarray) -> float:
    return 100.0 * math.fsum(values.tolist()) / values.size


def _med_floor(r: np.ndarray) -> float:
    r = np.sort(r)
    n = r.size
    # floor(median) of integers, computed exactly: median = (r[(n-1)//2] + r[n//2]) / 2
    return float((int(r[(n - 1) // 2]) + int(r[n // 2])) // 2)


def _mean_exact(r: np.ndarray) -> float:
    return float(Fraction(int(r.sum(dtype=np.int64)), r.size))


def _t2a_from_ranks(r: np.ndarray, ks: tuple[int, ...], map_k: int) -> dict:
    n = r.size
    out: dict[str, Any] = {}
    for k in ks:
        out[f"R@{k}"] = _pct_count(int(np.count_nonzero(r <= k)), n)
    ap = np.where(r <= map_k, 1.0 / r.astype(np.float64), 0.0)
    out[f"mAP@{map_k}"] = _pct_mean(ap)
    out["medR"] = _med_floor(r)
    out["meanR"] = _mean_exact(r)
    out["num_queries"] = int(n)
    return out


def t2a_metrics(
    scores: Any, text_clip: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = 10
) -> dict:
    """Text→audio metrics: every caption queries all clips; its own clip is the one relevant item.

    Keys: ``R@k`` for k in ``ks`` and ``mAP@{map_k}`` (percentages), ``medR``, ``meanR`` (ranks),
    ``num_queries``, ``tie_rule``.
    """
    ks = check_ks(ks)
    map_k = check_map_k(map_k)
    s, c = prepare(scores, text_clip)
    out = _t2a_from_ranks(t2a_ranks(s, c), ks, map_k)
    out["tie_rule"] = TIE_RULE
    return out


def _a2t_from_text_ranks(
    ranks: np.ndarray, c: np.ndarray, num_audios: int, ks: tuple[int, ...], map_k: int
) -> dict:
    p, clip, pos, counts, starts = group_sorted(ranks, c, num_audios)
    has = counts > 0
    nq = int(np.count_nonzero(has))
    m = counts[has]
    best = p[starts[has]]  # first element of each non-empty group = best rank
    out: dict[str, Any] = {}
    for k in ks:
        out[f"R@{k}"] = _pct_count(int(np.count_nonzero(best <= k)), nq)
    for k in ks:
        hits = np.bincount(clip[p <= k], minlength=num_audios)[has]
        # per-clip fraction, then an exact mean over clips
        frac = sum((Fraction(int(h), int(mm)) for h, mm in zip(hits.tolist(), m.tolist())), Fraction(0))
        out[f"recall_fraction@{k}"] = float(100 * frac / nq)
    contrib = np.where(p <= map_k, pos.astype(np.float64) / p.astype(np.float64), 0.0)
    # per-clip sums of i/p_i accumulated exactly, in fixed order
    ap = np.zeros(num_audios, dtype=np.float64)
    for a in np.flatnonzero(has).tolist():
        st, n = int(starts[a]), int(counts[a])
        ap[a] = math.fsum(contrib[st : st + n].tolist()) / n
    out[f"mAP@{map_k}"] = _pct_mean(ap[has])
    out["medR"] = _med_floor(best)
    out["meanR"] = _mean_exact(best)
    out["num_queries"] = nq
    out["num_clips_without_captions"] = int(num_audios - nq)
    return out


def a2t_metrics(
    scores: Any, text_clip: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = 10
) -> dict:
    """Audio→text metrics: every clip (with ≥1 caption) queries all captions; relevant = its captions.

    Keys: ``R@k`` (any-hit), ``recall_fraction@k`` (fraction of the clip's captions in the top k),
    ``mAP@{map_k}`` (sorted ranks, normalised by the number of relevant captions) — percentages;
    ``medR``/``meanR`` of the best relevant rank; ``num_queries``, ``num_clips_without_captions``,
    ``tie_rule``.
    """
    ks = check_ks(ks)
    map_k = check_map_k(map_k)
    s, c = prepare(scores, text_clip)
    out = _a2t_from_text_ranks(a2t_text_ranks(s, c), c, s.shape[1], ks, map_k)
    out["tie_rule"] = TIE_RULE
    return out


def retrieval_metrics(
    scores: Any, text_clip: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = 10
) -> RetrievalMetrics:
    """Both directions, as a `RetrievalMetrics` record (rows as :func:`t2a_metrics` and :func:`a2t_metrics`,
    without their tie rule, which the record holds once)."""
    ks = check_ks(ks)
    map_k = check_map_k(map_k)
    s, c = prepare(scores, text_clip)
    nt, na = s.shape
    return RetrievalMetrics(t2a=_t2a_from_ranks(t2a_ranks(s, c), ks, map_k),
                            a2t=_a2t_from_text_ranks(a2t_text_ranks(s, c), c, na, ks, map_k),
                            num_texts=int(nt), num_audios=int(na), tie_rule=TIE_RULE)
