"""Per-query evaluation results: every query's rank(s) and top-10 candidates, in both directions.

``hade eval --out M.json`` writes them beside the metrics as ``M.per_query.npz`` (numpy ``.npz``,
compressed, no pickles; ``np.load(path)`` reads it).  Arrays (T = captions, A = clips, K = min(10, A)
for T2A and min(10, T) for A2T):

============== ============ ===============================================================
key            dtype/shape  meaning
============== ============ ===============================================================
format         str []       ``"hade-per-query/1"``
split          str []       split name
text_clip      int32 [T]    clip index of each caption (captions in clip order)
t2a_rank       int32 [T]    1-based rank of the caption's own clip among all A clips
a2t_rank       int32 [T]    1-based rank of caption t among all T captions when its clip queries
t2a_top        int32 [T,K]  the K best clip indices for each caption, best first
a2t_top        int32 [A,K]  the K best caption indices for each clip, best first
clip_ids       str [A]      clip identifiers (index = clip index)
file_names     str [A]      audio file names (what a DCASE submission lists)
captions_sha256 str []      SHA-256 of the caption texts joined by newlines (same split check)
============== ============ ===============================================================

With ``hade eval --relevance FILE`` (several relevant files per query, :mod:`hade.eval.relevance`) four more
arrays (Q = annotated queries, N = their relevant files in all): ``rel_query`` int32 [Q] (caption index of
each query), ``rel_offsets`` int64 [Q+1] (query q's entries are ``offsets[q]:offsets[q+1]``), ``rel_clip``
int32 [N] (relevant clip indices) and ``rel_rank`` int32 [N] (1-based rank of each among all A clips, same tie
rule); :func:`multi_values` gives each query's AP@16 / AP@10 from them.

Ranks follow the tie rule of :mod:`hade.eval.metrics` (descending score, equal scores by ascending
index), and the top-K lists are the same order (a stable descending sort), so ``t2a_top[t, r-1] ==
text_clip[t]`` whenever ``r = t2a_rank[t] <= K``.  Every metric of :func:`retrieval_metrics` is a
function of the ranks; :func:`t2a_values` / :func:`a2t_values` give each query's value, whose mean
(times the stated scale) is exactly the reported metric.  At Clotho size (5,225 captions, 1,045
clips) the file is about 0.3 MB.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.ranks import DEFAULT_KS, a2t_text_ranks, group_sorted, prepare, t2a_ranks
from hade.eval.relevance import MULTI_METRICS, average_precision
from hade.utils.atomic import atomic_path

FORMAT = "hade-per-query/1"
TOP_K = 10
_KEYS = ("format", "split", "text_clip", "t2a_rank", "a2t_rank", "t2a_top", "a2t_top", "clip_ids", "file_names",
         "captions_sha256")
_REL_KEYS = ("rel_query", "rel_offsets", "rel_clip", "rel_rank")  # optional: only with relevance annotations
MULTI = "t2a_multi"  # the direction name of the multi-relevance metrics (text→audio, several relevant files)
# Max elements of one argsort block (bounded memory at any split size).
_BLOCK_ELEMS = 1 << 22


def captions_digest(captions: Sequence[str]) -> str:
    """SHA-256 (hex) of the caption texts in order, joined by newlines."""
    return hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()


@dataclass
class PerQuery:
    """Per-query results of one evaluation (shapes in the module docstring)."""

    text_clip: np.ndarray
    t2a_rank: np.ndarray
    a2t_rank: np.ndarray
    t2a_top: np.ndarray
    a2t_top: np.ndarray
    clip_ids: list[str]
    file_names: list[str]
    captions_sha256: str
    split: str = ""
    rel_query: np.ndarray | None = None  # [Q] caption index of each annotated query (None: no annotations)
    rel_offsets: np.ndarray | None = None  # [Q+1]
    rel_clip: np.ndarray | None = None  # [N] relevant clip indices
    rel_rank: np.ndarray | None = None  # [N] their 1-based ranks

    @property
    def has_relevance(self) -> bool:
        return self.rel_rank is not None

    @property
    def num_texts(self) -> int:
        return int(self.text_clip.size)

    @property
    def num_audios(self) -> int:
        return len(self.clip_ids)


def _top_k(s: np.ndarray, k: int) -> np.ndarray:
    """[R, N] scores -> [R, k] indices of the k best per row, stable descending (ties: lower index first)."""
    out = np.empty((s.shape[0], k), dtype=np.int32)
    step = max(1, _BLOCK_ELEMS // max(1, s.shape[1]))
    for a in range(0, s.shape[0], step):
        out[a:a + step] = np.argsort(-s[a:a + step], axis=1, kind="stable")[:, :k]
    return out


def per_query_results(scores: Any, text_clip: Any, clip_ids: Sequence[str], file_names: Sequence[str] | None = None,
                      captions: Sequence[str] = (), split: str = "") -> PerQuery:
    """Per-query ranks and top-10 lists from a ``[T, A]`` score matrix and ``text_clip`` [T]."""
    s, c = prepare(scores, text_clip)
    nt, na = s.shape
    if len(clip_ids) != na:
        raise InputError(f"clip_ids: {len(clip_ids)} ids for a score matrix with {na} audio columns")
    names = list(file_names) if file_names is not None else list(clip_ids)
    if len(names) != na:
        raise InputError(f"file_names: {len(names)} names for a score matrix with {na} audio columns")
    return PerQuery(text_clip=c.astype(np.int32), t2a_rank=t2a_ranks(s, c).astype(np.int32),
                    a2t_rank=a2t_text_ranks(s, c).astype(np.int32), t2a_top=_top_k(s, min(TOP_K, na)),
                    a2t_top=_top_k(s.T, min(TOP_K, nt)), clip_ids=[str(x) for x in clip_ids],
                    file_names=[str(x) for x in names], captions_sha256=captions_digest(captions), split=split)


def attach_relevance(pq: PerQuery, query_text: np.ndarray, offsets: np.ndarray, clips: np.ndarray,
                     ranks: np.ndarray) -> PerQuery:
    """`pq` with the multi-relevance arrays set (hade.eval.relevance.RelevanceMap and its relevant_ranks)."""
    pq.rel_query, pq.rel_offsets = query_text.astype(np.int32), offsets.astype(np.int64)
    pq.rel_clip, pq.rel_rank = clips.astype(np.int32), ranks.astype(np.int32)
    return pq


def per_query_path(metrics_json: str | Path) -> Path:
    """Where the per-query file of a metrics JSON goes: ``M.json`` -> ``M.per_query.npz``."""
    p = Path(metrics_json)
    return p.with_name(f"{p.stem if p.suffix == '.json' else p.name}.per_query.npz")


def save_per_query(path: str | Path, pq: PerQuery) -> None:
    """Write ``pq`` to ``path`` (.npz, compressed, atomically)."""
    arrays = {"format": np.array(FORMAT), "split": np.array(pq.split), "text_clip": pq.text_clip.astype(np.int32),
              "t2a_rank": pq.t2a_rank.astype(np.int32), "a2t_rank": pq.a2t_rank.astype(np.int32),
              "t2a_top": pq.t2a_top.astype(np.int32), "a2t_top": pq.a2t_top.astype(np.int32),
              "clip_ids": np.array(pq.clip_ids, dtype=str), "file_names": np.array(pq.file_names, dtype=str),
              "captions_sha256": np.array(pq.captions_sha256)}
    if pq.has_relevance:
        arrays.update(rel_query=pq.rel_query, rel_offsets=pq.rel_offsets, rel_clip=pq.rel_clip, rel_rank=pq.rel_rank)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def _check_ranks(path: Path, pq: PerQuery, num_clips: int) -> None:
    """Ranks are whole numbers in 1..candidates and clip indices in 0..clips-1: a file with NaN ranks used to
    give R@1 100.0 and a median rank of -9223372036854775808."""
    for name, ranks, most in (("t2a_rank", pq.t2a_rank, num_clips), ("a2t_rank", pq.a2t_rank, pq.text_clip.size)):
        values = np.asarray(ranks)
        whole = np.issubdtype(values.dtype, np.integer) or (
            np.issubdtype(values.dtype, np.floating) and bool(np.all(np.isfinite(values))) and
            bool(np.all(values == np.round(values))))
        if not whole or (values.size and (values.min() < 1 or values.max() > max(most, 1))):
            raise InputError(f"{path}: {name} must hold whole ranks in 1..{max(most, 1)}; the file is damaged")
    clips = np.asarray(pq.text_clip)
    if not np.issubdtype(clips.dtype, np.integer) or (clips.size and (clips.min() < 0 or clips.max() >= num_clips)):
        raise InputError(f"{path}: text_clip must hold clip indices in 0..{num_clips - 1}; the file is damaged")


def load_per_query(path: str | Path) -> PerQuery:
    """Read a file written by :func:`save_per_query` (InputError naming the file when it is not one)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such per-query file (written by `hade eval --out`)") from None
    except Exception as exc:
        raise InputError(f"{path}: not a per-query .npz file ({exc})") from exc
    missing = [k for k in _KEYS if k not in data]
    if missing or str(data["format"]) != FORMAT:
        raise InputError(f"{path}: expected a {FORMAT} file with arrays {list(_KEYS)}; "
                         f"missing {missing}, format {str(data.get('format', '?'))!r}")
    pq = PerQuery(text_clip=data["text_clip"], t2a_rank=data["t2a_rank"], a2t_rank=data["a2t_rank"],
                  t2a_top=data["t2a_top"], a2t_top=data["a2t_top"], clip_ids=[str(x) for x in data["clip_ids"]],
                  file_names=[str(x) for x in data["file_names"]], captions_sha256=str(data["captions_sha256"]),
                  split=str(data["split"]))
    nt, na = pq.text_clip.size, len(pq.clip_ids)
    if pq.t2a_rank.shape != (nt,) or pq.a2t_rank.shape != (nt,) or len(pq.t2a_top) != nt or len(pq.a2t_top) != na:
        raise InputError(f"{path}: inconsistent array shapes for {nt} captions and {na} clips")
    _check_ranks(path, pq, na)
    present = [k for k in _REL_KEYS if k in data]
    if present:
        if len(present) != len(_REL_KEYS):
            raise InputError(f"{path}: relevance arrays {present} without {sorted(set(_REL_KEYS) - set(present))}")
        attach_relevance(pq, data["rel_query"], data["rel_offsets"], data["rel_clip"], data["rel_rank"])
        off = pq.rel_offsets
        if off.size != pq.rel_query.size + 1 or off[0] != 0 or off[-1] != pq.rel_rank.size or \
                pq.rel_clip.shape != pq.rel_rank.shape or np.any(np.diff(off) < 1):
            raise InputError(f"{path}: inconsistent relevance arrays")
    return pq


# ----------------------------------------------------------------------------- per-query metric values
@dataclass
class QueryValues:
    """Per-query values of one direction: ``metric = scale[m] * mean(values[m])`` (``medR``: floor median).

    ``unit[q]`` is the resampling unit (clip) of query q, in ``0..num_units-1``: T2A queries are captions
    (a clip's captions share a unit), A2T queries are clips (one unit each).
    """

    values: dict[str, np.ndarray]  # metric -> float64 [Q]
    scale: dict[str, float]
    unit: np.ndarray  # int64 [Q]
    num_units: int


def clip_units(text_clip: np.ndarray, num_audios: int) -> tuple[np.ndarray, np.ndarray]:
    """(clips with captions [U], map clip index -> unit index or -1 [A])."""
    has = np.bincount(text_clip, minlength=num_audios) > 0
    clips = np.flatnonzero(has)
    unit_of = np.full(num_audios, -1, dtype=np.int64)
    unit_of[clips] = np.arange(clips.size)
    return clips, unit_of


def t2a_values(pq: PerQuery, ks: Sequence[int] = DEFAULT_KS, map_k: int = 10) -> QueryValues:
    """T2A per-caption values [T]: R@k indicator, AP@map_k = 1/r (r <= map_k), rank (meanR, medR)."""
    r = pq.t2a_rank.astype(np.int64)
    values = {f"R@{k}": (r <= k).astype(np.float64) for k in ks}
    values[f"mAP@{map_k}"] = np.where(r <= map_k, 1.0 / r, 0.0)
    values["medR"] = values["meanR"] = r.astype(np.float64)
    scale = {m: (1.0 if m in ("medR", "meanR") else 100.0) for m in values}
    clips, unit_of = clip_units(pq.text_clip.astype(np.int64), pq.num_audios)
    return QueryValues(values, scale, unit_of[pq.text_clip.astype(np.int64)], int(clips.size))


def a2t_values(pq: PerQuery, ks: Sequence[int] = DEFAULT_KS, map_k: int = 10) -> QueryValues:
    """A2T per-clip values [U] (clips with captions): any-hit R@k, recall_fraction@k, AP@map_k, best rank."""
    c = pq.text_clip.astype(np.int64)
    p, clip, pos, counts, starts = group_sorted(pq.a2t_rank.astype(np.int64), c, pq.num_audios)
    clips, _ = clip_units(c, pq.num_audios)
    m = counts[clips].astype(np.float64)
    best = p[starts[clips]]
    values = {f"R@{k}": (best <= k).astype(np.float64) for k in ks}
    for k in ks:
        values[f"recall_fraction@{k}"] = np.bincount(clip[p <= k], minlength=pq.num_audios)[clips] / m
    contrib = np.where(p <= map_k, pos / p.astype(np.float64), 0.0)
    # per-clip sums accumulated exactly and in order, as hade.eval.metrics does
    values[f"mAP@{map_k}"] = np.array([math.fsum(contrib[starts[a]:starts[a] + counts[a]].tolist()) / counts[a]
                                       for a in clips.tolist()], dtype=np.float64)
    values["medR"] = values["meanR"] = best.astype(np.float64)
    scale = {k: (1.0 if k in ("medR", "meanR") else 100.0) for k in values}
    return QueryValues(values, scale, np.arange(clips.size, dtype=np.int64), int(clips.size))


def multi_values(pq: PerQuery) -> QueryValues | None:
    """Per annotated query [Q]: AP@16 and AP@10 over its relevant files (hade.eval.relevance), resampled with
    the clip of its caption; None without relevance annotations."""
    if not pq.has_relevance:
        return None
    ranks, offsets = pq.rel_rank.astype(np.int64), pq.rel_offsets.astype(np.int64)
    values = {m: average_precision(ranks, offsets, int(m.split("@")[1])) for m in MULTI_METRICS}
    c = pq.text_clip.astype(np.int64)
    clips, unit_of = clip_units(c, pq.num_audios)
    return QueryValues(values, {m: 100.0 for m in values}, unit_of[c[pq.rel_query.astype(np.int64)]], int(clips.size))


def point_estimate(qv: QueryValues, metric: str) -> float:
    """The metric from its per-query values (exactly the value :func:`retrieval_metrics` reports)."""
    v = qv.values[metric]
    if metric == "medR":
        r = np.sort(v)
        return float(math.floor((r[(r.size - 1) // 2] + r[r.size // 2]) / 2))
    return qv.scale[metric] * math.fsum(v.tolist()) / v.size
