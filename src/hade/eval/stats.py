"""Uncertainty of retrieval metrics: bootstrap intervals, paired comparisons, Holm correction.

Resampling unit
---------------
The unit is the clip (those with at least one caption).  One bootstrap resample draws U clips with
replacement; T2A uses every caption of each drawn clip (a clip's five captions move together: they share
the audio and are not independent queries), A2T uses the drawn clips themselves.  Both directions use
the same draws.  For a mean metric, the resampled value is ``Σ_u n_u·S_u / Σ_u n_u·N_u`` with ``n_u`` the
times unit u was drawn, ``S_u`` the sum of its queries' values and ``N_u`` their number (a matrix product,
so 1,000 resamples of Clotho's 5,225 captions take milliseconds); ``medR`` is the floor of the weighted
median of the ranks.

Intervals are percentile intervals (``numpy.quantile``, linear interpolation) of B resamples (default
1,000) drawn by ``numpy.random.default_rng(SeedSequence([seed, 0]))`` (default seed 0): the same inputs
and settings give the same numbers, on any machine.

Paired comparison
-----------------
Two systems on the same split: the difference A − B of each metric, a paired-bootstrap interval (the same
resampled clips for both systems) and a two-sided paired sign-flip randomisation test: under the null the
two systems are exchangeable on each clip, so each clip's summed difference gets a random sign; the
p-value is ``(1 + #{|T*| >= |T|}) / (1 + P)`` over P random sign vectors (default 10,000) drawn by
``default_rng(SeedSequence([seed, 1]))``.  The test is for mean metrics; ``medR`` gets an interval only.
With several systems against one baseline, :func:`holm` adjusts the p-values (per metric and direction).
Each difference also states the smallest true difference the comparison would detect with 80 % power at
the two-sided 5 % level (:func:`detectable`), so that "no difference" has a size.
A system trained with several seeds enters as :func:`pooled_directions`: each query's value averaged over
its seeds, so the paired statistics speak of the system rather than of one seed.

Written by hand rather than with scipy.stats.bootstrap / permutation_test: those resample or permute
independent observations, and here the observations come in clusters (a clip's captions) that must be
resampled and sign-flipped together; the counts-matrix form also reuses one set of draws for every metric
and both directions, and for both systems of a paired comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hade.errors import InputError
from hade.eval.per_query import MULTI, PerQuery, QueryValues, a2t_values, multi_values, point_estimate, t2a_values
from hade.eval.differences import (DETECTABLE_NOTE, LEVEL, Z_LEVEL, Z_POWER, BaselineComparison,  # noqa: F401
                                   Comparison, Difference, Differences, HolmDifference, HolmDifferences, Intervals,
                                   StatSettings, detectable)
from hade.eval.relevance import MULTI_METRICS

DEFAULT_RESAMPLES = 1000
DEFAULT_PERMUTATIONS = 10000
DEFAULT_SEED = 0
# Metrics compared by `hade compare` and printed with intervals by `hade eval`.
REPORT_METRICS = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")
# what survives pooling seeds per query: means (a query's mean over seeds averages to the seeds' mean); not medR
POOLED_METRICS = ("R@1", "R@5", "R@10", "mAP@10", "meanR")
DIRECTIONS = ("t2a", "a2t", MULTI)  # in report order; t2a_multi only with relevance annotations
_CHUNK = 1000  # resamples / sign vectors per block (bounded memory)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def resample_counts(num_units: int, resamples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``[B, U]`` int32: how many times each unit is drawn in each of B resamples of U units."""
    if resamples < 1 or num_units < 1:
        raise InputError(f"bootstrap: need at least 1 resample and 1 unit, got {resamples} and {num_units}")
    draws = _rng(seed, 0).integers(0, num_units, size=(resamples, num_units))
    flat = draws + (np.arange(resamples) * num_units)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * num_units).reshape(resamples, num_units).astype(np.int32)


def _unit_sums(qv: QueryValues, metric: str) -> np.ndarray:
    return np.bincount(qv.unit, weights=qv.values[metric], minlength=qv.num_units)


def _weighted_floor_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Floor median of each row's multiset: ``values`` [Q] repeated ``weights[b, q]`` times -> [B]."""
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(weights[:, order], axis=1)
    n = cw[:, -1]
    lo = (cw <= ((n - 1) // 2)[:, None]).sum(axis=1)
    hi = (cw <= (n // 2)[:, None]).sum(axis=1)
    return np.floor((v[lo] + v[hi]) / 2)


def bootstrap_metric(qv: QueryValues, metric: str, counts: np.ndarray) -> np.ndarray:
    """[B] values of ``metric`` over the resamples given by ``counts`` [B, U]."""
    if metric == "medR":
        return np.concatenate([_weighted_floor_median(qv.values[metric], c[:, qv.unit])
                               for c in np.array_split(counts, max(1, len(counts) // _CHUNK))])
    n_u = np.bincount(qv.unit, minlength=qv.num_units).astype(np.float64)
    c = counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without any query of a sparse direction: NaN
        return qv.scale[metric] * (c @ _unit_sums(qv, metric)) / (c @ n_u)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    """[low, high] percentile interval of ``samples`` [B]."""
    a = (1 - level) / 2
    lo, hi = np.nanquantile(samples, [a, 1 - a])  # NaN: a resample that drew no annotated query (left out)
    return [float(lo), float(hi)]


def directions(pq: PerQuery) -> dict[str, QueryValues]:
    """Per-query values of both directions: ``{"t2a": QueryValues, "a2t": QueryValues}``, and ``"t2a_multi"``
    (AP@16 / AP@10 of each annotated query, hade.eval.relevance) when `pq` has relevance annotations."""
    out = {"t2a": t2a_values(pq), "a2t": a2t_values(pq)}
    multi = multi_values(pq)
    if multi is not None:
        out[MULTI] = multi
    return out


def pooled_directions(per_seed: Sequence[PerQuery], names: Sequence[str] | None = None,
                      metrics: Sequence[str] = POOLED_METRICS) -> dict[str, QueryValues]:
    """Per-query values of several evaluations of one split (a system's seeds) averaged per query: each mean
    metric of the pool is the mean of the seeds' metrics, and a paired comparison of two pools keeps every
    query paired. `names` label the evaluations in the InputError of a different split; medR is dropped (a
    median of seed-averaged ranks is no seed's median). The directions every evaluation has are pooled."""
    names = list(names) if names is not None else [f"evaluation {k}" for k in range(len(per_seed))]
    if not per_seed or len(names) != len(per_seed):
        raise InputError(f"pooled_directions: need one name per evaluation (got {len(names)} for {len(per_seed)})")
    for k, pq in enumerate(per_seed[1:], start=1):
        check_same_split(per_seed[0], pq, names[0], names[k])
    dirs = [directions(pq) for pq in per_seed]
    pooled = {}
    for d, first in dirs[0].items():
        if not all(d in x for x in dirs):
            continue
        means = [m for m in direction_metrics(d, metrics) if m != "medR"]
        values = {m: sum(x[d].values[m] for x in dirs) / len(dirs) for m in means}
        pooled[d] = QueryValues(values, {m: first.scale[m] for m in means}, first.unit, first.num_units)
    return pooled


def direction_metrics(direction: str, metrics: Sequence[str] = REPORT_METRICS) -> Sequence[str]:
    """The metrics reported for `direction`: `metrics` for t2a / a2t, MULTI_METRICS for t2a_multi."""
    return MULTI_METRICS if direction == MULTI else metrics


def bootstrap_cis(pq: PerQuery, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                  metrics: Sequence[str] = REPORT_METRICS) -> Intervals:
    """95 % bootstrap intervals of every metric of both directions (and t2a_multi when annotated)."""
    dirs = directions(pq)
    counts = resample_counts(dirs["a2t"].num_units, resamples, seed)
    return Intervals({d: {m: percentile_interval(bootstrap_metric(qv, m, counts))
                          for m in direction_metrics(d, metrics)} for d, qv in dirs.items()},
                     StatSettings(resamples, seed))


def sign_flip_pvalues(unit_diffs: dict[str, np.ndarray], permutations: int = DEFAULT_PERMUTATIONS,
                      seed: int = DEFAULT_SEED) -> dict[str, float]:
    """Two-sided paired sign-flip p-values, one per entry of ``unit_diffs`` (metric -> [U] summed A−B per unit).

    All metrics share the same random sign vectors.  Ties with the observed statistic count as extreme
    (relative tolerance 1e-9, so that float rounding cannot make an equal value look smaller).
    """
    if permutations < 1:
        raise InputError(f"permutations: expected at least 1, got {permutations}")
    names = list(unit_diffs)
    d = np.stack([unit_diffs[m] for m in names], axis=1)  # [U, M]
    observed = np.abs(d.sum(axis=0)) * (1 - 1e-9)
    extreme = np.zeros(len(names), dtype=np.int64)
    rng = _rng(seed, 1)
    for start in range(0, permutations, _CHUNK):
        n = min(_CHUNK, permutations - start)
        signs = rng.integers(0, 2, size=(n, d.shape[0]), dtype=np.int8).astype(np.float64) * 2 - 1
        extreme += (np.abs(signs @ d) >= observed).sum(axis=0)
    return {m: float((1 + extreme[i]) / (1 + permutations)) for i, m in enumerate(names)}


def check_same_split(a: PerQuery, b: PerQuery, name_a: str = "A", name_b: str = "B") -> None:
    """InputError unless ``a`` and ``b`` are results on the same captions and clips (in the same order)."""
    problems = []
    if a.clip_ids != b.clip_ids:
        problems.append(f"clips differ ({a.num_audios} vs {b.num_audios} clips)")
    if a.text_clip.shape != b.text_clip.shape or not np.array_equal(a.text_clip, b.text_clip):
        problems.append(f"caption→clip maps differ ({a.num_texts} vs {b.num_texts} captions)")
    if a.captions_sha256 != b.captions_sha256:
        problems.append("caption texts differ")
    if a.has_relevance and b.has_relevance and not all(
            np.array_equal(getattr(a, k), getattr(b, k)) for k in ("rel_query", "rel_offsets", "rel_clip")):
        problems.append("relevance annotations differ (evaluate both with the same --relevance file)")
    if problems:
        raise InputError(f"{name_a} and {name_b} are not results on the same split: " + "; ".join(problems)
                         + " — compare evaluations of one split (same data, same --split)")


def compare_values(a: dict[str, QueryValues], b: dict[str, QueryValues], resamples: int = DEFAULT_RESAMPLES,
                   permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED,
                   metrics: Sequence[str] = REPORT_METRICS) -> Differences:
    """Paired comparison A − B per direction and metric (direction -> metric -> Difference).

    ``a``/``b``: ``{"t2a": QueryValues, "a2t": QueryValues}`` with the same units (same split), and
    ``"t2a_multi"`` compared when both have it.
    """
    counts = resample_counts(a["a2t"].num_units, resamples, seed)
    out: Differences = {}
    for d in [d for d in a if d in b]:
        qa, qb = a[d], b[d]
        names = direction_metrics(d, metrics)
        means = [m for m in names if m != "medR"]
        pvalues = sign_flip_pvalues({m: _unit_sums(qa, m) - _unit_sums(qb, m) for m in means}, permutations, seed)
        rows = {}
        for m in names:
            boot = bootstrap_metric(qa, m, counts) - bootstrap_metric(qb, m, counts)
            pa, pb = point_estimate(qa, m), point_estimate(qb, m)
            rows[m] = Difference(pa, pb, pa - pb, percentile_interval(boot), pvalues.get(m))
        out[d] = rows
    return out


def compare(a: PerQuery, b: PerQuery, resamples: int = DEFAULT_RESAMPLES, permutations: int = DEFAULT_PERMUTATIONS,
            seed: int = DEFAULT_SEED, metrics: Sequence[str] = REPORT_METRICS) -> Comparison:
    """Paired comparison of two evaluations of the same split (see :func:`compare_values`)."""
    check_same_split(a, b)
    return compare_directions(directions(a), directions(b), resamples, permutations, seed, metrics)


def compare_pooled(a: Sequence[PerQuery], b: Sequence[PerQuery], resamples: int = DEFAULT_RESAMPLES,
                   permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED) -> Comparison:
    """System A (its seeds' evaluations) − system B (theirs), every query's values averaged over each
    system's seeds (:func:`pooled_directions`); all evaluations of one split (InputError otherwise)."""
    if not a or not b:
        raise InputError("compare_pooled: each system needs at least one evaluation")
    check_same_split(a[0], b[0], "A", "B")
    return compare_directions(pooled_directions(a, [f"A {k}" for k in range(len(a))]),
                              pooled_directions(b, [f"B {k}" for k in range(len(b))]),
                              resamples, permutations, seed, POOLED_METRICS)


def compare_directions(a: dict[str, QueryValues], b: dict[str, QueryValues], resamples: int = DEFAULT_RESAMPLES,
                       permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED,
                       metrics: Sequence[str] = REPORT_METRICS) -> Comparison:
    """As :func:`compare`, on per-query values (:func:`directions`, or :func:`pooled_directions` of seeds) that
    the caller has checked come from one split."""
    return Comparison(compare_values(a, b, resamples, permutations, seed, metrics),
                      StatSettings(resamples, seed, permutations))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (same order; None stays None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(pvalues[i])))
        out[i] = running
    return out


@dataclass
class Named:
    """A labelled evaluation for :func:`compare_many`."""

    name: str
    values: dict[str, QueryValues]


def compare_many(systems: Sequence[Named], baseline: str, resamples: int = DEFAULT_RESAMPLES,
                 permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED,
                 metrics: Sequence[str] = REPORT_METRICS) -> BaselineComparison:
    """Every system against ``baseline``, Holm over the systems per direction and metric."""
    by_name = {s.name: s for s in systems}
    if baseline not in by_name:
        raise InputError(f"--baseline: {baseline!r} is not one of {list(by_name)}")
    others = [s for s in systems if s.name != baseline]
    plain = {s.name: compare_values(s.values, by_name[baseline].values, resamples, permutations, seed, metrics)
             for s in others}
    # Holm over the systems, per direction and metric; a direction only some systems have (t2a_multi without
    # annotations elsewhere) gets no Holm p
    p_holm = {}
    for d in [d for d in DIRECTIONS if all(d in plain[s.name] for s in others)]:
        for m in direction_metrics(d, metrics):
            for s, p in zip(others, holm([plain[s.name][d][m].p for s in others])):
                p_holm[s.name, d, m] = p
    out = {name: {d: {m: HolmDifference(**vars(r), p_holm=p_holm.get((name, d, m))) for m, r in rows.items()}
                  for d, rows in dirs.items()} for name, dirs in plain.items()}
    return BaselineComparison(baseline, out, StatSettings(resamples, seed, permutations))


def _label(direction: str) -> str:
    """T2A, A2T, or T2Am (text→audio with several relevant files per query)."""
    return "T2Am" if direction == MULTI else direction.upper()


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def format_cis(estimates: Mapping[str, Mapping[str, Any]], cis: Intervals) -> str:
    """Lines ``T2A R@1   17.8  [14.2, 21.4]`` for every metric with an interval, then the settings.
    `estimates`: the point estimates, direction -> metric -> value."""
    lines = []
    for d in DIRECTIONS:
        for m, (lo, hi) in cis.by_direction.get(d, {}).items():
            lines.append(f"{_label(d)} {m:<7}{_fmt(estimates[d].get(m)):>7}  [{_fmt(lo)}, {_fmt(hi)}]")
    lines.append(f"95 % intervals: percentile bootstrap over clips (a clip's captions together), "
                 f"{cis.settings.resamples} resamples, seed {cis.settings.seed}")
    return "\n".join(lines)


def format_comparison(result: Comparison, name_a: str, name_b: str) -> str:
    """Text table of :func:`compare`'s result: one line per direction and metric."""
    head = f"{'metric':<11}{name_a[:12]:>12}{name_b[:12]:>12}{'A-B':>8}  {'95% CI':<18}{'p':>8}{'det.':>7}"
    lines = [f"A = {name_a}", f"B = {name_b}", head, "-" * len(head)]
    for d in [d for d in DIRECTIONS if d in result.by_direction]:
        for m, r in result.by_direction[d].items():
            ci = f"[{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]"
            lines.append(f"{_label(d) + ' ' + m:<11}{_fmt(r.a):>12}{_fmt(r.b):>12}{r.diff:>+8.1f}  "
                         f"{ci:<18}{_fmt_p(r.p):>8}{_fmt(r.detectable):>7}")
    s = result.settings
    lines.append(f"paired bootstrap over clips ({s.resamples} resamples), sign-flip test per clip "
                 f"({s.permutations} flips, two-sided), seed {s.seed}; medR: interval only; {DETECTABLE_NOTE}")
    return "\n".join(lines)


def format_many(result: BaselineComparison) -> str:
    """Text table of :func:`compare_many`: one line per system, direction and metric, Holm-adjusted p."""
    head = f"{'system':<16}{'metric':<11}{'diff':>8}  {'95% CI':<18}{'p':>8}{'p (Holm)':>10}{'det.':>7}"
    lines = [f"against baseline {result.baseline}", head, "-" * len(head)]
    for name, res in result.by_system.items():
        for d in [d for d in DIRECTIONS if d in res]:
            for m, r in res[d].items():
                ci = f"[{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]"
                lines.append(f"{name[:15]:<16}{_label(d) + ' ' + m:<11}{r.diff:>+8.1f}  {ci:<18}"
                             f"{_fmt_p(r.p):>8}{_fmt_p(r.p_holm):>10}{_fmt(r.detectable):>7}")
    s = result.settings
    lines.append(f"paired bootstrap over clips ({s.resamples} resamples), sign-flip test per clip "
                 f"({s.permutations} flips), Holm over the {len(result.by_system)} comparisons; seed {s.seed}; "
                 f"{DETECTABLE_NOTE}")
    return "\n".join(lines)
