"""DCASE 2025 task 6 submission files: a score matrix, scored with one or several relevant files per query.

Format (the 2025 baseline's ``python -m d25_t6.predict``, CPJKU/dcase2025_task6_baseline ``d25_t6/predict.py``,
which writes a pandas DataFrame indexed by query with one column per audio file; the README lists its
``resources/example_predictions.csv`` as the example for the submission package): a CSV whose header is
``index`` followed by the audio file names, and one row per distinct query text: the text, then its score with
every file (higher = more relevant). Unlike the 2022–2024 files (top 10 names per caption, hade.eval.dcase), it
ranks every file, which mAP@16 needs.

Written by ``hade eval --dcase-csv FILE --dcase-format scores``: one row per distinct caption text of the split
(first occurrence order; captions with one text have one score row), columns in clip order, scores printed
with enough digits to round-trip (9 significant digits for float32, 17 for float64), so that reading the
file back gives the same order and the same ties, hence the same ranks, as ``hade eval``.

Scored by ``hade eval --dcase-score FILE`` (the format is recognised by its header): every caption of the split
needs the row of its text; the columns must be exactly the split's files (in any order; ranks then use the
split's clip order for ties, hade's rule). Reported: the single-relevance T2A metrics (R@1, R@5, R@10, mAP@10)
over all captions and, with ``--relevance FILE``, mAP@16 / mAP@10 over the annotated queries
(hade.eval.relevance), with bootstrap intervals over clips.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.csvtext import csv_rows, read_text_file
from hade.eval.dcase import SubmissionScore
from hade.eval.per_query import attach_relevance, per_query_results
from hade.eval.relevance import Relevance, metrics_from_ranks, relevant_ranks, resolve_relevance
from hade.eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Intervals, bootstrap_cis
from hade.utils.atomic import write_text_atomic

INDEX = "index"
SCORE_METRICS = ("R@1", "R@5", "R@10", "mAP@10")


def distinct_texts(captions: Sequence[str]) -> list[str]:
    """The caption texts without repeats, in first-occurrence order."""
    return list(dict.fromkeys(captions))


def write_score_csv(path: str | Path, captions: Sequence[str], file_names: Sequence[str], scores: np.ndarray) -> None:
    """Write the 2025 submission: header ``index,<file names>``, one row per distinct caption text.

    scores: [T, A] (caption t against clip a), captions [T], file_names [A]."""
    scores = np.asarray(scores)
    if scores.shape != (len(captions), len(file_names)):
        raise InputError(f"dcase csv: scores of shape {scores.shape} for {len(captions)} captions and "
                         f"{len(file_names)} files")
    fmt = "{:.17g}" if scores.dtype == np.float64 else "{:.9g}"
    first = {text: t for t, text in reversed(list(enumerate(captions)))}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([INDEX, *file_names])
    for text in distinct_texts(captions):
        w.writerow([text, *map(fmt.format, scores[first[text]].tolist())])
    write_text_atomic(path, buf.getvalue())


def is_score_csv(path: str | Path) -> bool:
    """True when the file's header is that of a score matrix (not ``caption,fname_1,...``)."""
    rows = csv_rows(read_text_file(Path(path), "DCASE submission file").split("\n", 1)[0], Path(path))
    header = [h.strip() for h in rows[0]] if rows else []
    return bool(header) and header[:2] != ["caption", "fname_1"]


def _columns(header: list[str], file_names: Sequence[str], path: Path) -> np.ndarray:
    """[A]: the file's column (0-based, after the query column) of each clip of the split."""
    names = [h.strip() for h in header[1:]]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}: the file {twice!r} has two columns")
    column = {n: i for i, n in enumerate(names)}
    missing = [n for n in file_names if n not in column]
    if missing:
        raise InputError(f"{path}: no column for {len(missing)} clip(s) of the split (e.g. {missing[0]!r}); "
                         f"a 2025 submission scores every file")
    extra = sorted(set(names) - set(file_names))
    if extra:
        raise InputError(f"{path}: column(s) {extra[:3]} are not clips of the split")
    return np.asarray([column[n] for n in file_names], dtype=np.int64)


def read_score_csv(path: str | Path, file_names: Sequence[str]) -> dict[str, np.ndarray]:
    """{query text: scores [A] in the split's clip order} of a 2025 submission (InputError naming the line)."""
    path = Path(path)
    rows = csv_rows(read_text_file(path, "DCASE submission file"), path)
    if not rows or len(rows[0]) < 2:
        raise InputError(f"{path}: expected a header 'index,<audio file names>'")
    order = _columns(rows[0], file_names, path)
    width = len(rows[0])
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != width:
            raise InputError(f"{path}, line {line}: {len(row)} cells, expected {width} (the query and a score "
                             f"per file)")
        if row[0] in out:
            raise InputError(f"{path}, line {line}: the query {row[0][:60]!r} has a second row")
        try:
            values = np.asarray(row[1:], dtype=np.float64)
        except ValueError:
            raise InputError(f"{path}, line {line}: a score is not a number") from None
        if not np.all(np.isfinite(values) | np.isneginf(values)):
            raise InputError(f"{path}, line {line}: NaN or +inf score")
        out[row[0]] = values[order]
    return out


def score_matrix(rows: dict[str, np.ndarray], captions: Sequence[str], source: str) -> np.ndarray:
    """[T, A]: each caption's row (by its text); InputError naming the first caption without one."""
    missing = [c for c in distinct_texts(captions) if c not in rows]
    if missing:
        raise InputError(f"{source}: no row for {len(missing)} caption text(s) of the split (e.g. "
                         f"{missing[0][:60]!r}); need a row for every caption")
    return np.stack([rows[c] for c in captions])


def score_2025(path: str | Path, captions: Sequence[str], text_clip: np.ndarray, file_names: Sequence[str],
               relevance: Relevance | None = None, resamples: int = DEFAULT_RESAMPLES,
               seed: int = DEFAULT_SEED) -> SubmissionScore:
    """The metrics of a 2025 submission (format "scores"): T2A R@1, R@5, R@10, mAP@10; with `relevance` also
    t2a_multi; intervals when resamples > 0."""
    from hade.eval.metrics import retrieval_metrics

    scores = score_matrix(read_score_csv(path, file_names), captions, str(path))
    tc = np.asarray(text_clip, dtype=np.int64)
    pq = per_query_results(scores, tc, list(file_names), file_names, captions)
    t2a = retrieval_metrics(scores, tc).t2a
    multi = ci = None
    if relevance is not None:
        rmap = resolve_relevance(relevance, captions, file_names)
        ranks = relevant_ranks(scores, rmap)
        multi = metrics_from_ranks(ranks, rmap.offsets, rmap.source)
        attach_relevance(pq, rmap.query_text, rmap.offsets, rmap.clips, ranks)
    if resamples:
        cis = bootstrap_cis(pq, resamples, seed, SCORE_METRICS)
        ci = Intervals({d: v for d, v in cis.by_direction.items() if d != "a2t"}, cis.settings)  # T2A only
    return SubmissionScore({m: t2a[m] for m in SCORE_METRICS} | {"num_queries": int(tc.size)},
                           int(np.count_nonzero(pq.t2a_rank <= 10)), str(path), format="scores", t2a_multi=multi,
                           ci=ci)
