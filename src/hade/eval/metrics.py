"""Exact audio–text retrieval metrics (text→audio and audio→text).

Inputs
------
``scores``: a ``[num_texts, num_audios]`` matrix (numpy array or torch tensor, real
numbers; higher = more similar).  ``text_clip``: ``[num_texts]`` integers, the index
of each caption's clip.  Every caption has exactly one clip; a clip may have any
number of captions (1, 5, more); a clip without captions is a valid distractor for
text→audio but cannot be an audio→text query (it is left out of the A2T means and
counted in ``num_clips_without_captions``).

Tie rule
--------
Candidates are ordered by descending score; candidates with *equal* scores are
ordered by *ascending candidate index* (audio index for T2A, caption index for
A2T).  This is exactly the order of a stable descending sort.  A relevant item
with score ``s`` at index ``j`` therefore has the 1-based rank::

    rank = #(score > s) + #(score == s and index < j) + 1

which is what this module computes (vectorised, in row blocks, without sorting).
Results do not depend on the sorting algorithm, the platform or the run; means are
accumulated exactly (``math.fsum`` over float64 values).

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
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hade.errors import InputError

__all__ = [
    "TIE_RULE",
    "DEFAULT_KS",
    "rank_t2a",
    "rank_a2t",
    "t2a_metrics",
    "a2t_metrics",
    "retrieval_metrics",
    "chance_metrics",
    "format_metrics_table",
]

TIE_RULE = (
    "descending score; equal scores ordered by ascending candidate index "
    "(stable sort): rank = #(score > s) + #(score == s and index < own index) + 1"
)
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)

# Max number of elements in one [block, candidates] comparison (bounded memory).
_BLOCK_ELEMS = 1 << 22


# ----------------------------------------------------------------------------- input
def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch.Tensor
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()  # exact: every bfloat16 value is a float32 value
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc


def _check_scores(scores: Any) -> np.ndarray:
    s = _to_numpy(scores, "scores")
    if s.ndim != 2:
        raise InputError(
            f"scores: expected a 2-D matrix [num_texts, num_audios], got shape {tuple(s.shape)}"
        )
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise InputError(f"scores: empty matrix of shape {tuple(s.shape)}; need ≥1 text and ≥1 audio")
    if s.dtype.kind == "f":
        pass  # keep float16/32/64 as is: comparisons are exact in the native dtype
    elif s.dtype.kind in "iub":
        s = s.astype(np.float64)
    else:
        raise InputError(f"scores: expected real numbers, got dtype {s.dtype}")
    nan = np.isnan(s)
    if nan.any():
        t, a = np.argwhere(nan)[0]
        raise InputError(
            f"scores: {int(nan.sum())} NaN value(s) (first at text {int(t)}, audio {int(a)}); "
            "NaN scores have no rank — fix the model output or mask with -inf"
        )
    return s


def _check_text_clip(text_clip: Any, num_texts: int, num_audios: int) -> np.ndarray:
    c = _to_numpy(text_clip, "text_clip")
    if c.ndim != 1:
        raise InputError(f"text_clip: expected a 1-D array [num_texts], got shape {tuple(c.shape)}")
    if c.shape[0] != num_texts:
        raise InputError(
            f"text_clip: has {c.shape[0]} entries but scores has {num_texts} rows (texts); "
            "need one clip index per caption"
        )
    if c.dtype.kind not in "iu":
        if c.dtype.kind == "f" and c.size and np.all(np.isfinite(c)) and np.all(c == np.round(c)):
            c = c.astype(np.int64)
        elif c.size == 0:
            c = c.astype(np.int64)
        else:
            raise InputError(f"text_clip: expected integer clip indices, got dtype {c.dtype}")
    c = c.astype(np.int64, copy=False)
    if c.size:
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or hi >= num_audios:
            bad = int(np.flatnonzero((c < 0) | (c >= num_audios))[0])
            raise InputError(
                f"text_clip: clip index {int(c[bad])} (caption {bad}) is out of range "
                f"[0, {num_audios - 1}] for scores with {num_audios} audio columns"
            )
    return c


def _prepare(scores: Any, text_clip: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _check_scores(scores)
    c = _check_text_clip(text_clip, s.shape[0], s.shape[1])
    return s, c


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    try:
        raw = list(ks)
        out = tuple(int(k) for k in raw)
    except Exception as exc:
        raise InputError(f"ks: expected positive integers, got {ks!r}") from exc
    if not out or any(k < 1 for k in out) or any(isinstance(k, bool) or k != int(k) for k in raw):
        raise InputError(f"ks: expected positive integers, got {raw!r}")
    return tuple(dict.fromkeys(out))  # unique, order kept


def _check_map_k(map_k: int) -> int:
    if int(map_k) != map_k or map_k < 1:
        raise InputError(f"map_k: expected a positive integer, got {map_k!r}")
    return int(map_k)


# ----------------------------------------------------------------------------- ranks
def _ranks_in_rows(rows: np.ndarray, own_score: np.ndarray, own_index: np.ndarray) -> np.ndarray:
    """1-based stable-descending rank of ``own_index`` in each row of ``rows`` [B, N]."""
    s = own_score[:, None]
    idx = np.arange(rows.shape[1])
    before = (rows > s) | ((rows == s) & (idx[None, :] < own_index[:, None]))
    return before.sum(axis=1, dtype=np.int64) + 1


def _t2a_ranks(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    nt, na = s.shape
    out = np.empty(nt, dtype=np.int64)
    step = max(1, _BLOCK_ELEMS // na)
    for a in range(0, nt, step):
        b = min(nt, a + step)
        rows = s[a:b]
        own = c[a:b]
        out[a:b] = _ranks_in_rows(rows, rows[np.arange(b - a), own], own)
    return out


def _a2t_text_ranks(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """For each caption t: its 1-based rank among all captions for the query clip c[t]."""
    nt, _ = s.shape
    st = s.T  # [num_audios, num_texts]; row a = scores of all captions for clip a
    out = np.empty(nt, dtype=np.int64)
    step = max(1, _BLOCK_ELEMS // nt)
    for a in range(0, nt, step):
        b = min(nt, a + step)
        t = np.arange(a, b)
        rows = st[c[a:b]]  # [B, num_texts] (copy)
        out[a:b] = _ranks_in_rows(rows, s[t, c[a:b]], t)
    return out


def _group_sorted(ranks: np.ndarray, c: np.ndarray, num_audios: int):
    """Sort caption ranks by (clip, rank); return sorted ranks, clip ids, within-clip position (1-based), counts."""
    order = np.lexsort((ranks, c))
    p = ranks[order]
    clip = c[order]
    counts = np.bincount(c, minlength=num_audios).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(p.size, dtype=np.int64) - starts[clip] + 1
    return p, clip, pos, counts, starts


def rank_t2a(scores: Any, text_clip: Any) -> np.ndarray:
    """1-based rank of each caption's own clip among all clips, shape [num_texts] (int64)."""
    s, c = _prepare(scores, text_clip)
    return _t2a_ranks(s, c)


def rank_a2t(scores: Any, text_clip: Any) -> list[np.ndarray]:
    """For each clip, the sorted 1-based ranks of its captions among all captions.

    Returns a list of length num_audios; a clip without captions gets an empty array.
    """
    s, c = _prepare(scores, text_clip)
    p, _, _, counts, starts = _group_sorted(_a2t_text_ranks(s, c), c, s.shape[1])
    return [p[st : st + n].copy() for st, n in zip(starts.tolist(), counts.tolist())]


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
    ks = _check_ks(ks)
    map_k = _check_map_k(map_k)
    s, c = _prepare(scores, text_clip)
    out = _t2a_from_ranks(_t2a_ranks(s, c), ks, map_k)
    out["tie_rule"] = TIE_RULE
    return out


def _a2t_from_text_ranks(
    ranks: np.ndarray, c: np.ndarray, num_audios: int, ks: tuple[int, ...], map_k: int
) -> dict:
    p, clip, pos, counts, starts = _group_sorted(ranks, c, num_audios)
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
    ks = _check_ks(ks)
    map_k = _check_map_k(map_k)
    s, c = _prepare(scores, text_clip)
    out = _a2t_from_text_ranks(_a2t_text_ranks(s, c), c, s.shape[1], ks, map_k)
    out["tie_rule"] = TIE_RULE
    return out


def retrieval_metrics(
    scores: Any, text_clip: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = 10
) -> dict:
    """Both directions: ``{"t2a": {...}, "a2t": {...}, "num_texts", "num_audios", "tie_rule"}``."""
    ks = _check_ks(ks)
    map_k = _check_map_k(map_k)
    s, c = _prepare(scores, text_clip)
    nt, na = s.shape
    return {
        "t2a": _t2a_from_ranks(_t2a_ranks(s, c), ks, map_k),
        "a2t": _a2t_from_text_ranks(_a2t_text_ranks(s, c), c, na, ks, map_k),
        "num_texts": int(nt),
        "num_audios": int(na),
        "tie_rule": TIE_RULE,
    }


# ----------------------------------------------------------------------------- chance
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
) -> dict:
    """Exact expected metrics of a uniformly random ranking (no simulation).

    T2A: R@k = min(k, N_a)/N_a, mAP@K = (1/N_a) Σ_{r ≤ K} 1/r, meanR = (N_a+1)/2.
    A2T (clip with m captions among N_t): any-hit R@k = 1 − C(N_t−m, k)/C(N_t, k);
    recall_fraction@k = k/N_t; mAP@K = (1/m) Σ_{p ≤ K} (1/p)(m/N_t)(1 + (p−1)(m−1)/(N_t−1));
    meanR (best rank) = (N_t+1)/(m+1). medR is ``None`` (not an expectation).
    Same layout as :func:`retrieval_metrics`.
    """
    ks = _check_ks(ks)
    map_k = _check_map_k(map_k)
    for name, v in (("num_texts", num_texts), ("num_audios", num_audios)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise InputError(f"{name}: expected a positive integer, got {v!r}")
    nt, na = int(num_texts), int(num_audios)
    c = _check_text_clip(text_clip, nt, na)
    counts = np.bincount(c, minlength=na)
    return {
        "t2a": _chance_t2a(na, ks, map_k),
        "a2t": _chance_a2t(nt, counts, ks, map_k),
        "num_texts": nt,
        "num_audios": na,
        "tie_rule": "random ranking (expectation over uniform permutations)",
    }


# ----------------------------------------------------------------------------- table
_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")


def _cell(v: Any, rank: bool) -> str:
    if v is None:
        return "-"
    if rank and float(v) == int(v):
        return f"{int(v)}"
    return f"{float(v):.2f}" if not rank else f"{float(v):.1f}"


def format_metrics_table(metrics: Mapping[str, Any], chance: Mapping[str, Any] | None = None) -> str:
    """Fixed-width text table: rows T2A / A2T (and chance rows), columns R@1 R@5 R@10 mAP@10 medR meanR.

    ``metrics`` is the output of :func:`retrieval_metrics` (or a dict with a "t2a" and/or "a2t"
    entry); ``chance`` the output of :func:`chance_metrics`.  Missing values print as "-".
    """
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for key, label in (("t2a", "T2A"), ("a2t", "A2T")):
        if isinstance(metrics.get(key), Mapping):
            rows.append((label, metrics[key]))
    if chance is not None:
        for key, label in (("t2a", "T2A chance"), ("a2t", "A2T chance")):
            if isinstance(chance.get(key), Mapping):
                rows.append((label, chance[key]))
    if not rows:
        raise InputError('format_metrics_table: metrics has neither a "t2a" nor an "a2t" entry')
    width0 = max(len("direction"), *(len(r[0]) for r in rows))
    widths = [max(len(col), 8) for col in _COLUMNS]
    header = "direction".ljust(width0) + "".join(" " + c.rjust(w) for c, w in zip(_COLUMNS, widths))
    lines = [header, "-" * len(header)]
    for label, m in rows:
        cells = [_cell(m.get(col), col in ("medR", "meanR")) for col in _COLUMNS]
        lines.append(label.ljust(width0) + "".join(" " + v.rjust(w) for v, w in zip(cells, widths)))
    multi = metrics.get("t2a_multi")
    if isinstance(multi, Mapping):
        cells = "  ".join(f"{k} {multi[k]:.2f}" for k in multi if k.startswith("mAP@"))
        lines.append(f"T2A, several relevant files per query: {cells}  ({multi['num_queries']} queries, "
                     f"{multi['relevant_per_query']:.1f} relevant each; AP normalised by all relevant files)")
    tie = metrics.get("tie_rule")
    if tie:
        lines.append(f"ties: {tie}")
    return "\n".join(lines)
