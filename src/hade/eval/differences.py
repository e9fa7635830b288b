"""The records of hade.eval.stats (which re-exports them): how intervals were drawn (`StatSettings`), bootstrap
`Intervals`, one metric's paired `Difference` (with its Holm-adjusted p among several: `HolmDifference`), a
`Comparison` of two systems and a `BaselineComparison` of several against one, each with the JSON it is
written as (`to_dict`); and `detectable`, the size of a true difference a comparison finds with 80 % power."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

LEVEL = 0.95
Z_LEVEL = 1.959964  # two-sided 5 %: the 95 % interval is ±Z_LEVEL standard errors
Z_POWER = Z_LEVEL + 0.841621  # ... and 80 % power
DETECTABLE_NOTE = "det.: the smallest true difference found with 80 % power at the two-sided 5 % level"


@dataclass(frozen=True)
class StatSettings:
    """How the intervals were drawn (`resamples`, `seed`) and, for a comparison, how many sign-flip
    `permutations` gave its p-values; `to_dict` spells out the procedure for the JSON reader."""

    resamples: int
    seed: int
    permutations: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resamples": int(self.resamples), "seed": int(self.seed), "level": LEVEL,
                               "interval": "percentile",
                               "unit": "clip (T2A: a clip's captions resampled together; A2T: clips)",
                               "rng": "numpy default_rng(SeedSequence([seed, 0]))"}
        if self.permutations is not None:
            out.update(permutations=int(self.permutations),
                       test="paired sign-flip per clip, two-sided, p=(1+#extreme)/(1+P)",
                       permutation_rng="numpy default_rng(SeedSequence([seed, 1]))")
        return out


@dataclass(frozen=True)
class Intervals:
    """95 % bootstrap intervals: `by_direction` ``{direction: {metric: [lo, hi]}}`` and their `settings`."""

    by_direction: dict[str, dict[str, list[float]]]
    settings: StatSettings

    def to_dict(self) -> dict[str, Any]:
        return {d: dict(rows) for d, rows in self.by_direction.items()} | {"settings": self.settings.to_dict()}


def detectable(ci: Sequence[float]) -> float:
    """The smallest true difference a comparison with this 95 % interval [lo, hi] detects with 80 % power at
    the two-sided 5 % level: (1.96 + 0.84) × SE, the bootstrap SE read off the interval (width / 3.92)."""
    lo, hi = ci
    return Z_POWER * (hi - lo) / (2 * Z_LEVEL)


@dataclass(frozen=True)
class Difference:
    """One metric of a paired comparison: the values of `a` and `b`, `diff` = a − b, its 95 % paired-bootstrap
    interval `ci` [lo, hi] and sign-flip `p` (None for medR: an interval only); `detectable`: the smallest
    true difference this comparison finds with 80 % power (:func:`detectable`)."""

    a: float
    b: float
    diff: float
    ci: list[float]
    p: float | None

    @property
    def detectable(self) -> float:
        return detectable(self.ci)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "diff": self.diff, "ci": list(self.ci), "p": self.p,
                "detectable": self.detectable}


@dataclass(frozen=True)
class HolmDifference(Difference):
    """A `Difference` among several against one baseline, with its Holm-adjusted `p_holm`."""

    p_holm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"p_holm": self.p_holm}


Differences = dict[str, dict[str, Difference]]  # direction -> metric -> Difference
HolmDifferences = dict[str, dict[str, HolmDifference]]  # as Differences, among several against one baseline


@dataclass(frozen=True)
class Comparison:
    """A − B of two evaluations of one split: `by_direction` (direction -> metric -> Difference) and the
    `settings` of the intervals and tests."""

    by_direction: Differences
    settings: StatSettings

    def to_dict(self) -> dict[str, Any]:
        return _differences_json(self.by_direction) | {"settings": self.settings.to_dict()}


@dataclass(frozen=True)
class BaselineComparison:
    """Several systems against one `baseline`: `by_system` (system -> direction -> metric -> HolmDifference,
    Holm over the systems) and the `settings`."""

    baseline: str
    by_system: dict[str, HolmDifferences]
    settings: StatSettings

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline,
                "systems": {name: _differences_json(rows) for name, rows in self.by_system.items()},
                "settings": self.settings.to_dict()}


def _differences_json(by_direction: Mapping[str, Mapping[str, Difference]]) -> dict[str, Any]:
    return {d: {m: r.to_dict() for m, r in rows.items()} for d, rows in by_direction.items()}
