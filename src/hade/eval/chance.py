"""Exact expected metrics of a uniformly random ranking (no simulation): the chance level `hade eval`
prints under every table. A `RetrievalMetrics` record, as `hade.eval.metrics.retrieval_metrics` answers."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.ranks import DEFAULT_KS, check_ks, check_map_k, check_text_clip
from hade.eval.results import RetrievalMetrics

CHANCE_RULE = "random ranking (expectation over uniform permutations)"


def _chance_t2a(na: int, ks: tuple[int, ...], map_k: int) -> dict:
    out: dict[str, Any] = {}
    for k in ks:
        out[f"R@{k}"] = float(Fraction(100 * min(k, na), na))
    ap = sum((Fraction(1, r) for r in range(1, min(map_k, na) + 1)), Fraction(0)) / na
    out[f"mAP@{map_k}"] = float(100 * ap)
    out["medR"] = None  # the median of a random run is not an expectation; not reported
    out["meanR"] = float(Fraction(na + 1, 2))
    return out


def _chance_ap_multi(nt: int, m: int, map_k: int) -> Fraction:
    """E[(1/m) Σ_{i: p_i ≤ K} i/p_i] for m relevant among nt, uniformly random order.

    = (1/m) Σ_{p ≤ K} (1/p) · P(p relevant) · E[1 + #relevant before p | p relevant]
    = (1/m) Σ_{p ≤ K} (1/p) · (m/nt) · (1 + (p-1)(m-1)/(nt-1)).
    """
    total = Fraction(0)
    for p in range(1, min(map_k, nt) + 1):
        before = Fraction((p - 1) * (m - 1), nt - 1) if nt > 1 else Fraction(0)
        total += Fraction(1, p) * Fraction(m, nt) * (1 + before)
    return total / m


def _chance_a2t(nt: int, counts: np.ndarray, ks: tuple[int, ...], map_k: int) -> dict:
    ms = [int(x) for x in counts.tolist() if x > 0]
    nq = len(ms)
    hist: dict[int, int] = {}
    for m in ms:
        hist[m] = hist.get(m, 0) + 1
    out: dict[str, Any] = {}
    for k in ks:
        kk = min(k, nt)
        tot = sum(
            (n * (1 - Fraction(math.comb(nt - m, kk), math.comb(nt, kk))) for m, n in hist.items()),
            Fraction(0),
        )
        out[f"R@{k}"] = float(100 * tot / nq)
    for k in ks:
        out[f"recall_fraction@{k}"] = float(Fraction(100 * min(k, nt), nt))
    ap = sum((n * _chance_ap_multi(nt, m, map_k) for m, n in hist.items()), Fraction(0)) / nq
    out[f"mAP@{map_k}"] = float(100 * ap)
    out["medR"] = None
    # E[min of m uniform distinct positions in 1..nt] = (nt+1)/(m+1)
    mean_best = sum((n * Fraction(nt + 1, m + 1) for m, n in hist.items()), Fraction(0)) / nq
    out["meanR"] = float(mean_best)
    return out


def chance_metrics(
    num_texts: int,
    num_audios: int,
    text_clip: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_k: int = 10,
) -> RetrievalMetrics:
    """Exact expected metrics of a uniformly random ranking (no simulation).

    T2A: R@k = min(k, N_a)/N_a, mAP@K = (1/N_a) Σ_{r ≤ K} 1/r, meanR = (N_a+1)/2.
    A2T (clip with m captions among N_t): any-hit R@k = 1 − C(N_t−m, k)/C(N_t, k);
    recall_fraction@k = k/N_t; mAP@K = (1/m) Σ_{p ≤ K} (1/p)(m/N_t)(1 + (p−1)(m−1)/(N_t−1));
    meanR (best rank) = (N_t+1)/(m+1). medR is ``None`` (not an expectation).
    The same record as :func:`retrieval_metrics`; its tie rule names the random ranking.
    """
    ks = check_ks(ks)
    map_k = check_map_k(map_k)
    for name, v in (("num_texts", num_texts), ("num_audios", num_audios)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise InputError(f"{name}: expected a positive integer, got {v!r}")
    nt, na = int(num_texts), int(num_audios)
    c = check_text_clip(text_clip, nt, na)
    counts = np.bincount(c, minlength=na)
    return RetrievalMetrics(t2a=_chance_t2a(na, ks, map_k), a2t=_chance_a2t(nt, counts, ks, map_k),
                            num_texts=nt, num_audios=na, tie_rule=CHANCE_RULE)
