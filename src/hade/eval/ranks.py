"""Ranks of relevant items in a score matrix, exactly and in bounded memory, and the checks of the inputs
every metric shares (``scores`` [num_texts, num_audios], ``text_clip`` [num_texts]; `hade.eval.metrics`).

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
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from hade.errors import InputError

TIE_RULE = (
    "descending score; equal scores ordered by ascending candidate index "
    "(stable sort): rank = #(score > s) + #(score == s and index < own index) + 1"
)
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)

# Max number of elements in one [block, candidates] comparison (bounded memory).
_BLOCK_ELEMS = 1 << 22


# ----------------------------------------------------------------------------- input
def to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch.Tensor
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()  # exact: every bfloat16 value is a float32 value
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc


def check_scores(scores: Any) -> np.ndarray:
    s = to_numpy(scores, "scores")
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


def check_text_clip(text_clip: Any, num_texts: int, num_audios: int) -> np.ndarray:
    c = to_numpy(text_clip, "text_clip")
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


def prepare(scores: Any, text_clip: Any) -> tuple[np.ndarray, np.ndarray]:
    s = check_scores(scores)
    c = check_text_clip(text_clip, s.shape[0], s.shape[1])
    return s, c


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    try:
        raw = list(ks)
        out = tuple(int(k) for k in raw)
    except Exception as exc:
        raise InputError(f"ks: expected positive integers, got {ks!r}") from exc
    if not out or any(k < 1 for k in out) or any(isinstance(k, bool) or k != int(k) for k in raw):
        raise InputError(f"ks: expected positive integers, got {raw!r}")
    return tuple(dict.fromkeys(out))  # unique, order kept


def check_map_k(map_k: int) -> int:
    if int(map_k) != map_k or map_k < 1:
        raise InputError(f"map_k: expected a positive integer, got {map_k!r}")
    return int(map_k)


# ----------------------------------------------------------------------------- ranks
def ranks_in_rows(rows: np.ndarray, own_score: np.ndarray, own_index: np.ndarray) -> np.ndarray:
    """1-based stable-descending rank of ``own_index`` in each row of ``rows`` [B, N]."""
    s = own_score[:, None]
    idx = np.arange(rows.shape[1])
    before = (rows > s) | ((rows == s) & (idx[None, :] < own_index[:, None]))
    return before.sum(axis=1, dtype=np.int64) + 1


def t2a_ranks(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    nt, na = s.shape
    out = np.empty(nt, dtype=np.int64)
    step = max(1, _BLOCK_ELEMS // na)
    for a in range(0, nt, step):
        b = min(nt, a + step)
        rows = s[a:b]
        own = c[a:b]
        out[a:b] = ranks_in_rows(rows, rows[np.arange(b - a), own], own)
    return out


def a2t_text_ranks(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """For each caption t: its 1-based rank among all captions for the query clip c[t]."""
    nt, _ = s.shape
    st = s.T  # [num_audios, num_texts]; row a = scores of all captions for clip a
    out = np.empty(nt, dtype=np.int64)
    step = max(1, _BLOCK_ELEMS // nt)
    for a in range(0, nt, step):
        b = min(nt, a + step)
        t = np.arange(a, b)
        rows = st[c[a:b]]  # [B, num_texts] (copy)
        out[a:b] = ranks_in_rows(rows, s[t, c[a:b]], t)
    return out


def group_sorted(ranks: np.ndarray, c: np.ndarray, num_audios: int):
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
    s, c = prepare(scores, text_clip)
    return t2a_ranks(s, c)


def rank_a2t(scores: Any, text_clip: Any) -> list[np.ndarray]:
    """For each clip, the sorted 1-based ranks of its captions among all captions.

    Returns a list of length num_audios; a clip without captions gets an empty array.
    """
    s, c = prepare(scores, text_clip)
    p, _, _, counts, starts = group_sorted(a2t_text_ranks(s, c), c, s.shape[1])
    return [p[st : st + n].copy() for st, n in zip(starts.tolist(), counts.tolist())]
