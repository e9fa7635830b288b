"""Several relevant files per query: the DCASE 2025 task 6 evaluation (mAP@16 with additional relevance annotations).

The annotations file
--------------------
A CSV with a header and the columns ``query`` (a caption text) and ``audio_filenames`` (the files relevant to
it, written as a Python list literal, e.g. ``"['a.wav', 'b.wav']"``), one row per query, as the task's
``metadata_eval.csv`` for the Clotho development-testing ("evaluation") split (CPJKU/dcase2025_task6_baseline,
``resources/metadata_eval.csv``, read there with pandas and ``ast.literal_eval``; `read_relevance` read that
public file, which hade does not ship, as 1,037 queries with 3,116 relevant files, 3.0 per query and at most
12; the results page says 2.8 per caption).
Other columns are ignored. A query (leading and trailing white space removed, as hade's readers remove it from
captions) is matched to the first caption of the split with exactly its text (as the baseline's
``captions.index(query)``; captions with one text have one text embedding, so which occurrence is taken changes
no rank, only the clip the query is resampled with); each file name to the split's clip with that audio file
name. An unknown query or file, an empty or malformed
list, or a file listed twice for one query is an InputError naming the file and line: a metric over a
silently changed set of queries would not be the task's metric.

The metric (exact definition)
-----------------------------
For a query with R relevant files at sorted 1-based ranks p_1 < p_2 < … < p_R among all clips of the split,

    AP@K = (1/R) · Σ_{i : p_i ≤ K} i / p_i,        mAP@K = 100 · mean over queries of AP@K,

* normalised by R, the number of relevant files of the query, **not** by min(R, K): a query with more than K
  relevant files cannot reach AP 1, and relevant files ranked beyond K count in the denominator only;
* cut-off K = 16 (the rank by which the task ranks systems; mAP@10 is reported beside it, the metric the
  baseline's code logs as ``test_multiple_positives/mAP@10``);
* precision at each relevant position i / p_i counts only relevant files at or above p_i (the i-th).

Source: CPJKU/dcase2025_task6_baseline, ``d25_t6/retrieval_module.py`` (commit c78422f, 2025-06-09),
``on_validation_epoch_end``: ``average_precision_at_k`` sorts the 0-based ranks of the relevant files, adds
``i / (rank + 1)`` while ``rank < k`` and divides by ``len(relevant_ranks)``; the README reports "mAP@16 (new
annotations)" and the results page (dcase.community/challenge2025/task-language-based-audio-retrieval-results)
ranks teams by mAP@16. The same normalisation as the DCASE 2023 baseline's ``xmodal_retrieval.py``.

Ties: the baseline ranks with ``torch.argsort`` (no stated rule for equal scores). hade uses its one rule
(`hade.eval.metrics.TIE_RULE`): equal scores are ordered by ascending clip index, so a relevant file's rank is
#(score > s) + #(score == s and index < own) + 1, and relevant files tied with each other take distinct
consecutive ranks in clip order.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.csvtext import csv_rows, read_text_file
from hade.eval.ranks import TIE_RULE, check_scores, ranks_in_rows

RELEVANCE_K = 16
MULTI_METRICS = ("mAP@16", "mAP@10")
COLUMNS = ("query", "audio_filenames")
_BLOCK_ELEMS = 1 << 22


@dataclass
class Relevance:
    """An annotations file as read: `queries` [Q] texts and `files` [Q] lists of relevant file names, with the
    CSV line of each query (`lines` [Q]) for error messages."""

    queries: list[str]
    files: list[list[str]]
    lines: list[int]
    source: str


@dataclass
class RelevanceMap:
    """Relevance resolved against one split: query q is caption `query_text[q]`; its relevant clips are
    `clips[offsets[q]:offsets[q+1]]` (clip indices, in file order). Shapes: query_text [Q], offsets [Q+1],
    clips [N] (int64)."""

    query_text: np.ndarray
    offsets: np.ndarray
    clips: np.ndarray
    source: str = ""

    @property
    def num_queries(self) -> int:
        return int(self.query_text.size)


def _file_list(cell: str, path: Path, line: int) -> list[str]:
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise InputError(f"{path}, line {line}: audio_filenames must be a list of file names such as "
                         f"\"['a.wav', 'b.wav']\", got {cell[:80]!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{path}, line {line}: audio_filenames must be a list of file names, got {cell[:80]!r}")
    if not value:
        raise InputError(f"{path}, line {line}: the query has no relevant file (an empty list)")
    names = [v.strip() for v in value]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}, line {line}: {twice!r} is listed twice for one query")
    return names


def read_relevance(path: str | Path) -> Relevance:
    """Read an annotations CSV (module docstring); InputError naming the file and line for anything else."""
    path = Path(path)
    rows = csv_rows(read_text_file(path, "relevance annotations"), path)
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: expected a CSV header with the columns {list(COLUMNS)}, got "
                         f"{','.join(header)[:120]!r} (missing {missing})")
    qi, fi = header.index("query"), header.index("audio_filenames")
    out = Relevance([], [], [], str(path))
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(qi, fi):
            raise InputError(f"{path}, line {line}: {len(row)} cell(s), expected the columns {list(COLUMNS)}")
        out.queries.append(row[qi].strip())  # hade's readers strip captions too
        out.files.append(_file_list(row[fi], path, line))
        out.lines.append(line)
    if not out.queries:
        raise InputError(f"{path}: no query rows")
    return out


def resolve_relevance(rel: Relevance, captions: Sequence[str], file_names: Sequence[str],
                      dropped: Sequence[str] = ()) -> RelevanceMap:
    """Match the queries to captions (first caption with the text) and the files to clips (by file name).

    dropped: file names of clips left out of this evaluation (undecodable), named in the error when listed."""
    first_caption: dict[str, int] = {}
    for t, text in enumerate(captions):
        first_caption.setdefault(text, t)
    clip_of = {name: a for a, name in enumerate(file_names)}
    query_text, offsets, clips = [], [0], []
    for text, names, line in zip(rel.queries, rel.files, rel.lines):
        if text not in first_caption:
            raise InputError(f"{rel.source}, line {line}: the query {text[:60]!r} is not a caption of the split; "
                             f"evaluate the split whose captions the annotations are for")
        unknown = [n for n in names if n not in clip_of]
        if unknown:
            why = " (dropped: it could not be decoded)" if unknown[0] in set(dropped) else ""
            raise InputError(f"{rel.source}, line {line}: file {unknown[0]!r}{why} is not a clip of the split"
                             + (f" ({len(unknown)} unknown)" if len(unknown) > 1 else ""))
        query_text.append(first_caption[text])
        clips.extend(clip_of[n] for n in names)
        offsets.append(len(clips))
    return RelevanceMap(np.asarray(query_text, dtype=np.int64), np.asarray(offsets, dtype=np.int64),
                        np.asarray(clips, dtype=np.int64), rel.source)


def relevant_ranks(scores: Any, rmap: RelevanceMap) -> np.ndarray:
    """[N] int64: the 1-based rank (tie rule of hade.eval.metrics) of every relevant clip in its query's row of
    the [T, A] score matrix, in the order of `rmap.clips`."""
    s = check_scores(scores)
    if rmap.num_queries and (rmap.query_text.max() >= s.shape[0] or rmap.clips.max() >= s.shape[1]):
        raise InputError(f"relevance: indices beyond the score matrix of shape {tuple(s.shape)}")
    counts = np.diff(rmap.offsets)
    row_of = np.repeat(rmap.query_text, counts)  # caption row of each relevant entry
    out = np.empty(rmap.clips.size, dtype=np.int64)
    step = max(1, _BLOCK_ELEMS // s.shape[1])
    for a in range(0, out.size, step):
        b = min(out.size, a + step)
        rows, own = s[row_of[a:b]], rmap.clips[a:b]
        out[a:b] = ranks_in_rows(rows, rows[np.arange(b - a), own], own)
    return out


def average_precision(ranks: np.ndarray, offsets: np.ndarray, k: int = RELEVANCE_K) -> np.ndarray:
    """[Q] float64 AP@k of each query from the ranks [N] of its relevant files (`offsets` [Q+1]):
    (1/R) Σ_{i: p_i ≤ k} i/p_i over the sorted ranks p_1 < … < p_R (module docstring)."""
    out = np.empty(offsets.size - 1, dtype=np.float64)
    for q in range(out.size):
        p = np.sort(ranks[offsets[q]:offsets[q + 1]])
        i = np.arange(1, p.size + 1)
        out[q] = math.fsum((i[p <= k] / p[p <= k]).tolist()) / p.size
    return out


def multi_relevance_metrics(scores: Any, rmap: RelevanceMap) -> dict:
    """``{"mAP@16", "mAP@10"`` (percentages), ``"num_queries", "relevant_per_query", "normalisation",
    "tie_rule", "annotations"}`` of a [T, A] score matrix."""
    ranks = relevant_ranks(scores, rmap)
    return metrics_from_ranks(ranks, rmap.offsets, rmap.source)


def metrics_from_ranks(ranks: np.ndarray, offsets: np.ndarray, source: str = "") -> dict:
    """The multi-relevance metrics dict from the relevant ranks [N] and query offsets [Q+1]."""
    out: dict[str, Any] = {}
    for name in MULTI_METRICS:
        ap = average_precision(ranks, offsets, int(name.split("@")[1]))
        out[name] = 100.0 * math.fsum(ap.tolist()) / ap.size
    out["num_queries"] = int(offsets.size - 1)
    out["relevant_per_query"] = float(ranks.size / max(1, offsets.size - 1))
    out["normalisation"] = "AP@K = (1/R) sum over relevant ranks p_i <= K of i/p_i; R = all relevant files"
    out["tie_rule"] = TIE_RULE
    out["annotations"] = source
    return out
