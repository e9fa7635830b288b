"""DCASE language-based audio retrieval submission files (2022 task 6b, 2023 task 6b, 2024 task 8); the 2025
task 6 file (a score matrix, scored with several relevant files per query) is in hade.eval.dcase2025.

Format: a CSV with header ``caption,fname_1,...,fname_10`` and one row per caption of the evaluation
split: the caption text and the file names of the 10 best clips, best first (``csv`` module quoting, so
captions with commas or quotes survive).  When the split has fewer than 10 clips the trailing cells are
empty.

Scoring (``hade eval --dcase-score FILE --data D --split S``) reads such a file with the split's ground
truth and gives the task's metrics over captions (text→audio, one relevant file per caption): R@1, R@5,
R@10 and mAP@10 (AP = 1/position of the relevant file in the top 10, 0 when absent), as percentages, with
bootstrap intervals over clips like ``hade eval``'s.

Duplicate caption texts: real data has a few identical captions on different clips.  The official 2022
script keys a dict by caption text, so it scores one query per distinct text (the last clip listed wins).
Here every caption is one query, as in ``hade eval``: the i-th row with a given text is matched to the
i-th caption with that text in split order (clip order, then caption order — the order in which
``hade eval --dcase-csv`` writes them), and only that caption's own clip is relevant.  A submission
written by ``hade eval`` therefore scores exactly as ``hade eval`` reported.  Rows are otherwise matched by
text, so their order does not matter.  A missing or extra caption, an unknown file name, a repeated file
name in one row or more than 10 file names is an InputError naming the file and line.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.csvtext import csv_rows, read_text_file
from hade.eval.per_query import TOP_K, PerQuery, QueryValues, clip_units, point_estimate
from hade.eval.stats import (DEFAULT_RESAMPLES, DEFAULT_SEED, Intervals, StatSettings, bootstrap_metric,
                             percentile_interval, resample_counts)
from hade.utils.atomic import write_text_atomic

HEADER = ["caption"] + [f"fname_{i}" for i in range(1, TOP_K + 1)]
DCASE_METRICS = ("R@1", "R@5", "R@10", "mAP@10")


@dataclass(frozen=True)
class SubmissionScore:
    """A scored submission file: its `t2a` row (R@1, R@5, R@10, mAP@10, num_queries), `num_listed` (captions
    whose file is in their top 10), the `submission` path, `format` ("scores" for a 2025 score matrix, None
    for a top-10 file), and, when asked for, `t2a_multi` (several relevant files per query) and `ci`
    (bootstrap intervals of the T2A metrics)."""

    t2a: dict[str, float]
    num_listed: int
    submission: str
    format: str | None = None
    t2a_multi: dict[str, float] | None = None
    ci: Intervals | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t2a": dict(self.t2a)}
        if self.t2a_multi is not None:
            out["t2a_multi"] = dict(self.t2a_multi)
        out["submission"] = self.submission
        if self.format is not None:
            out["format"] = self.format
        out["num_listed"] = self.num_listed
        if self.ci is not None:
            out["ci"] = self.ci.to_dict()
        return out


def write_dcase_csv(path: str | Path, captions: Sequence[str], pq: PerQuery) -> None:
    """Write the submission file: one row per caption (in order) with its top-10 file names."""
    if len(captions) != pq.num_texts:
        raise InputError(f"dcase csv: {len(captions)} captions for per-query results of {pq.num_texts}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for text, top in zip(captions, pq.t2a_top.tolist()):
        names = [pq.file_names[i] for i in top]
        w.writerow([text] + names + [""] * (TOP_K - len(names)))
    write_text_atomic(path, buf.getvalue())


def read_dcase_csv(path: str | Path) -> list[tuple[str, list[str]]]:
    """Rows ``(caption, [file names, best first])`` of a submission file (InputError naming the line)."""
    path = Path(path)
    rows = csv_rows(read_text_file(path, "DCASE submission file"), path)
    if not rows or [h.strip() for h in rows[0]] != HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise InputError(f"{path}: expected the header {','.join(HEADER)}, got {got[:120]!r}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) > TOP_K + 1 and any(c.strip() for c in row[TOP_K + 1:]):
            raise InputError(f"{path}, line {line}: more than {TOP_K} file names")
        names = [c.strip() for c in row[1:TOP_K + 1] if c.strip()]
        if len(set(names)) != len(names):
            raise InputError(f"{path}, line {line}: a file name is listed twice in one row ({names})")
        out.append((row[0], names))
    return out


def dcase_positions(rows: list[tuple[str, list[str]]], captions: Sequence[str], text_clip: np.ndarray,
                    file_names: Sequence[str], source: str = "submission") -> np.ndarray:
    """[T] int64: 1-based position of each caption's own file in its row's list, 0 when not listed.

    Caption t is matched to the i-th row with its text when it is the i-th caption with that text.
    """
    known = set(file_names)
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, (text, names) in enumerate(rows):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"{source}, row {i + 1} ({text[:40]!r}): file name(s) {unknown[:3]} are not clips "
                             f"of the split")
        by_text[text].append(i)
    pos = np.zeros(len(captions), dtype=np.int64)
    seen: dict[str, int] = defaultdict(int)
    for t, text in enumerate(captions):
        k = seen[text]
        seen[text] += 1
        if k >= len(by_text.get(text, ())):
            raise InputError(f"{source}: no row for caption {t} {text[:60]!r} (occurrence {k + 1} of its text); "
                             f"need one row per caption of the split")
        names = rows[by_text[text][k]][1]
        own = file_names[int(text_clip[t])]
        pos[t] = names.index(own) + 1 if own in names else 0
    extra = sum(len(v) for v in by_text.values()) - len(captions)
    if extra > 0:
        spare = next(text for text, v in by_text.items() if len(v) > seen[text])
        raise InputError(f"{source}: {extra} row(s) for captions not in the split (e.g. {spare[:60]!r})")
    return pos


def score_dcase(path: str | Path, captions: Sequence[str], text_clip: np.ndarray, file_names: Sequence[str],
                resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> SubmissionScore:
    """The task's metrics of a submission file against the split's ground truth.

    captions [T], text_clip [T] (clip index of each caption), file_names [A] (one per clip); no intervals
    when resamples=0.
    """
    rows = read_dcase_csv(path)
    tc = np.asarray(text_clip, dtype=np.int64)
    pos = dcase_positions(rows, captions, tc, file_names, str(path))
    values = {f"R@{k}": ((pos > 0) & (pos <= k)).astype(np.float64) for k in (1, 5, 10)}
    values["mAP@10"] = np.where(pos > 0, 1.0 / np.maximum(pos, 1), 0.0)
    clips, unit_of = clip_units(tc, len(file_names))
    qv = QueryValues(values, {m: 100.0 for m in values}, unit_of[tc], int(clips.size))
    t2a = {m: point_estimate(qv, m) for m in DCASE_METRICS} | {"num_queries": int(tc.size)}
    ci = None
    if resamples:
        counts = resample_counts(qv.num_units, resamples, seed)
        ci = Intervals({"t2a": {m: percentile_interval(bootstrap_metric(qv, m, counts)) for m in DCASE_METRICS}},
                       StatSettings(resamples, seed))
    return SubmissionScore(t2a, int(np.count_nonzero(pos)), str(path), ci=ci)
