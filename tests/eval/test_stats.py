"""Per-query results, bootstrap intervals, paired comparisons and Holm (hade.eval.per_query / stats)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hade.errors import InputError
from hade.eval import stats
from hade.eval.metrics import retrieval_metrics
from hade.eval.per_query import (
    QueryValues,
    a2t_values,
    load_per_query,
    per_query_path,
    per_query_results,
    point_estimate,
    save_per_query,
    t2a_values,
)


def _split(clips: int, per_clip: int = 5) -> np.ndarray:
    return np.repeat(np.arange(clips), per_clip)


def _scores(rng: np.random.Generator, text_clip: np.ndarray, clips: int, mu: np.ndarray) -> np.ndarray:
    """Gaussian noise [T, A]; each caption's own clip gets + mu[its clip] (a shared per-clip effect)."""
    s = rng.normal(size=(text_clip.size, clips))
    s[np.arange(text_clip.size), text_clip] += mu[text_clip]
    return s


def _pq(scores: np.ndarray, text_clip: np.ndarray):
    return per_query_results(scores, text_clip, [f"c{i}" for i in range(scores.shape[1])])


# --------------------------------------------------------------------------- per-query values
def test_per_query_values_reproduce_every_metric_exactly():
    rng = np.random.default_rng(3)
    # uneven captions per clip, a clip without captions (a distractor), many ties (coarse scores)
    text_clip = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 4, 5, 5, 5, 5, 5, 5, 6])
    scores = np.round(rng.normal(size=(text_clip.size, 7)), 1)
    scores[np.arange(text_clip.size), text_clip] += 0.5
    metrics = retrieval_metrics(scores, text_clip)
    pq = _pq(scores, text_clip)
    for direction, qv in (("t2a", t2a_values(pq)), ("a2t", a2t_values(pq))):
        for name in qv.values:
            if name.startswith("recall_fraction"):  # an exact Fraction mean there: equal to the last bit or two
                assert point_estimate(qv, name) == pytest.approx(metrics.direction(direction)[name], rel=1e-13)
            else:
                assert point_estimate(qv, name) == metrics.direction(direction)[name], (direction, name)
            if name not in ("medR",):  # "the mean of the per-query values is the metric"
                mean = qv.scale[name] * math.fsum(qv.values[name].tolist()) / qv.values[name].size
                assert mean == pytest.approx(metrics.direction(direction)[name], rel=1e-13)
    assert a2t_values(pq).values["R@1"].size == 6  # clip 3 has no captions: no A2T query


def test_top10_lists_follow_the_ranks_and_the_tie_rule():
    rng = np.random.default_rng(1)
    text_clip = _split(15, 2)
    scores = np.round(rng.normal(size=(30, 15)), 1)  # ties
    pq = _pq(scores, text_clip)
    assert pq.t2a_top.shape == (30, 10) and pq.a2t_top.shape == (15, 10) and pq.t2a_top.dtype == np.int32
    for t in range(30):
        expected = sorted(range(15), key=lambda a: (-scores[t, a], a))[:10]
        assert pq.t2a_top[t].tolist() == expected
        if pq.t2a_rank[t] <= 10:
            assert pq.t2a_top[t, pq.t2a_rank[t] - 1] == text_clip[t]
    for a in range(15):
        assert pq.a2t_top[a].tolist() == sorted(range(30), key=lambda t: (-scores[t, a], t))[:10]


def test_per_query_file_round_trip_and_bad_files(tmp_path):
    text_clip = _split(12, 3)
    pq = _pq(np.random.default_rng(0).normal(size=(36, 12)), text_clip)
    path = per_query_path(tmp_path / "m.json")
    assert path.name == "m.per_query.npz"
    save_per_query(path, pq)
    back = load_per_query(path)
    for field in ("text_clip", "t2a_rank", "a2t_rank", "t2a_top", "a2t_top"):
        assert np.array_equal(getattr(back, field), getattr(pq, field)) and getattr(back, field).dtype == np.int32
    assert back.clip_ids == pq.clip_ids and back.captions_sha256 == pq.captions_sha256
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(InputError, match="bad.npz: not a per-query"):
        load_per_query(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(InputError, match="missing"):
        load_per_query(tmp_path / "other.npz")



@pytest.mark.parametrize("field, value", [("t2a_rank", np.nan), ("a2t_rank", 0), ("t2a_rank", 10**6), ("text_clip", -1)])
def test_a_per_query_file_with_impossible_ranks_is_refused(tmp_path, field, value):
    """Issue 24: NaN ranks were accepted and printed R@1 100.0 with a median rank of -9223372036854775808."""
    pq = _pq(np.random.default_rng(0).normal(size=(36, 12)), _split(12, 3))
    save_per_query(tmp_path / "m.npz", pq)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data[field] = data[field].astype(np.float64 if np.isnan(value) else data[field].dtype)
    data[field][3] = value
    np.savez(tmp_path / "damaged.npz", **data)
    with pytest.raises(InputError, match=f"damaged.npz: {field} must hold"):
        load_per_query(tmp_path / "damaged.npz")


# --------------------------------------------------------------------------- bootstrap
def test_grouped_resampling_keeps_a_clips_captions_together():
    counts = stats.resample_counts(7, 50, seed=4)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    assert np.array_equal(counts, stats.resample_counts(7, 50, seed=4))  # deterministic
    assert not np.array_equal(counts, stats.resample_counts(7, 50, seed=5))
    # a value per caption, different captions of one clip with different values
    text_clip = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 6, 6])
    values = np.arange(12, dtype=np.float64) ** 2
    qv = QueryValues({"x": values, "medR": values}, {"x": 1.0, "medR": 1.0}, text_clip, 7)
    boot = stats.bootstrap_metric(qv, "x", counts)
    medians = stats.bootstrap_metric(qv, "medR", counts)
    for b in range(50):
        # the explicit resample: every caption of each drawn clip, as often as the clip was drawn
        drawn = np.repeat(np.arange(7), counts[b])
        resample = np.concatenate([values[text_clip == c] for c in drawn])
        assert boot[b] == pytest.approx(resample.mean(), rel=1e-12)
        r = np.sort(resample)
        assert medians[b] == math.floor((r[(r.size - 1) // 2] + r[r.size // 2]) / 2)


def _true_t2a(mu_mean: float, mu_sd: float, clips: int) -> tuple[float, float]:
    """True T2A R@1 and meanR of :func:`_scores` with mu ~ N(mu_mean, mu_sd²) (numerical integration)."""
    z = np.linspace(-8, 8, 1601)
    w = sps.norm.pdf(z) * (z[1] - z[0])
    mu = mu_mean + mu_sd * z
    # P(own > all A-1 others | mu) = ∫ φ(x) Φ(x + mu)^(A-1) dx ; P(other > own | mu) = Φ(-mu/√2)
    r1 = (w[None, :] * sps.norm.cdf(z[None, :] + mu[:, None]) ** (clips - 1)).sum(axis=1)
    return 100 * float((w * r1).sum()), 1 + (clips - 1) * float((w * sps.norm.cdf(-mu / np.sqrt(2))).sum())


def _coverage(grouped: bool, sims: int = 200, clips: int = 80) -> dict[str, float]:
    true_r1, true_mean_r = _true_t2a(1.5, 1.5, clips)
    text_clip = _split(clips)
    hits = {"R@1": 0, "meanR": 0}
    for sim in range(sims):
        rng = np.random.default_rng(1000 + sim)
        qv = t2a_values(_pq(_scores(rng, text_clip, clips, rng.normal(1.5, 1.5, clips)), text_clip))
        if not grouped:  # each caption its own unit: ignores that a clip's captions share the audio
            qv = QueryValues(qv.values, qv.scale, np.arange(text_clip.size), text_clip.size)
        counts = stats.resample_counts(qv.num_units, 400, seed=sim)
        for name, truth in (("R@1", true_r1), ("meanR", true_mean_r)):
            lo, hi = stats.percentile_interval(stats.bootstrap_metric(qv, name, counts))
            hits[name] += lo <= truth <= hi
    return {k: v / sims for k, v in hits.items()}


def test_bootstrap_intervals_cover_the_true_value_at_the_nominal_rate():
    """Captions of a clip share a random clip effect (strongly correlated): resampling clips covers the
    true value about 95 % of the time; resampling captions independently would not."""
    grouped = _coverage(grouped=True)
    assert 0.9 <= grouped["R@1"] <= 0.99 and 0.9 <= grouped["meanR"] <= 0.99, grouped
    naive = _coverage(grouped=False, sims=60)
    assert naive["R@1"] < 0.85, naive


def test_bootstrap_cis_are_deterministic_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    text_clip = _split(30)
    pq = _pq(_scores(rng, text_clip, 30, np.full(30, 2.0)), text_clip)
    a = stats.bootstrap_cis(pq, resamples=200, seed=7)
    assert a == stats.bootstrap_cis(pq, resamples=200, seed=7)
    assert a != stats.bootstrap_cis(pq, resamples=200, seed=8)
    assert a.settings.resamples == 200 and a.settings.seed == 7
    assert a.to_dict()["settings"]["resamples"] == 200 and set(a.to_dict()) == {"t2a", "a2t", "settings"}
    metrics = retrieval_metrics(_scores(np.random.default_rng(0), text_clip, 30, np.full(30, 2.0)), text_clip)
    for d in ("t2a", "a2t"):
        for name, (lo, hi) in a.by_direction[d].items():
            assert lo <= metrics.direction(d)[name] <= hi, (d, name)
    text = stats.format_cis(metrics.to_dict(), a)
    line = text.splitlines()[0].split()
    assert line == ["T2A", "R@1", f"{metrics.t2a['R@1']:.1f}", f"[{a.by_direction['t2a']['R@1'][0]:.1f},",
                    f"{a.by_direction['t2a']['R@1'][1]:.1f}]"]
    assert "200 resamples, seed 7" in text
    with pytest.raises(InputError, match="at least 1 resample"):
        stats.resample_counts(5, 0)


# --------------------------------------------------------------------------- paired comparison
def _pair(seed: int, clips: int, gain: float) -> tuple:
    """Two systems on the same queries: shared clip difficulty, independent noise; B better by `gain`."""
    rng = np.random.default_rng(seed)
    text_clip = _split(clips)
    mu = rng.normal(1.5, 1.0, clips)
    return (_pq(_scores(rng, text_clip, clips, mu), text_clip),
            _pq(_scores(rng, text_clip, clips, mu + gain), text_clip))


def test_sign_flip_p_values_are_uniform_under_the_null_and_small_for_a_better_system():
    ps: dict[str, list[float]] = {"R@1": [], "meanR": []}
    for sim in range(200):
        a, b = _pair(sim, 30, 0.0)
        qa, qb = t2a_values(a), t2a_values(b)
        diffs = {m: np.bincount(qa.unit, weights=qa.values[m] - qb.values[m]) for m in ps}
        for m, p in stats.sign_flip_pvalues(diffs, permutations=400, seed=sim).items():
            ps[m].append(p)
    mean_rank = np.array(ps["meanR"])  # a nearly continuous statistic: p uniform on (0, 1]
    assert sps.kstest(mean_rank, "uniform").pvalue > 0.01
    assert 0.02 <= (mean_rank <= 0.05).mean() <= 0.09 and 0.4 <= (mean_rank <= 0.5).mean() <= 0.6
    r1 = np.array(ps["R@1"])  # R@1 differences are discrete (often exactly 0, p = 1): valid, not over-rejecting
    assert (r1 <= 0.05).mean() <= 0.07 and (r1 <= 0.5).mean() <= 0.56
    a, b = _pair(0, 60, 1.5)
    result = stats.compare(b, a, resamples=300, permutations=2000, seed=0)
    for d in ("t2a", "a2t"):
        r1, mean_r = result.by_direction[d]["R@1"], result.by_direction[d]["meanR"]
        assert r1.p < 0.01 and r1.diff > 0 and r1.ci[0] > 0
        assert mean_r.diff < 0 and mean_r.ci[1] < 0


def test_compare_identical_systems_and_the_paired_interval():
    a, b = _pair(5, 30, 0.3)
    same = stats.compare(a, a, resamples=200, permutations=500)
    assert all(r.diff == 0 and r.ci == [0.0, 0.0] and r.p in (1.0, None)
               for d in ("t2a", "a2t") for r in same.by_direction[d].values())
    res = stats.compare(a, b, resamples=500, permutations=500, seed=1)
    assert res == stats.compare(a, b, resamples=500, permutations=500, seed=1)
    for d in ("t2a", "a2t"):
        for name, r in res.by_direction[d].items():
            assert r.diff == pytest.approx(r.a - r.b) and r.ci[0] <= r.ci[1]
    assert res.by_direction["t2a"]["medR"].p is None  # interval only: not a mean
    as_json = res.to_dict()
    assert as_json["t2a"]["R@1"] == {"a": res.by_direction["t2a"]["R@1"].a, "b": res.by_direction["t2a"]["R@1"].b,
                                     "diff": res.by_direction["t2a"]["R@1"].diff,
                                     "ci": res.by_direction["t2a"]["R@1"].ci, "p": res.by_direction["t2a"]["R@1"].p,
                                     "detectable": stats.detectable(res.by_direction["t2a"]["R@1"].ci)}
    lo, hi = res.by_direction["t2a"]["R@1"].ci
    assert stats.detectable([lo, hi]) == pytest.approx((1.959964 + 0.841621) * (hi - lo) / 3.919928)
    assert "det." in stats.format_comparison(res, "x", "y")
    assert as_json["settings"]["permutations"] == 500 and "p_holm" not in as_json["t2a"]["R@1"]
    # the paired interval is narrower than the unpaired one would be (shared clip difficulty)
    ia, ib = (stats.bootstrap_cis(pq, 500, 1).by_direction["t2a"]["R@1"] for pq in (a, b))
    paired = res.by_direction["t2a"]["R@1"].ci
    assert paired[1] - paired[0] < math.hypot(ia[1] - ia[0], ib[1] - ib[0])
    assert "A = x" in stats.format_comparison(res, "x", "y")


def test_results_of_different_splits_are_refused():
    a, _ = _pair(0, 20, 0.0)
    c, _ = _pair(0, 21, 0.0)
    with pytest.raises(InputError, match="not results on the same split: clips differ"):
        stats.compare(a, c)
    tc = a.text_clip.copy()
    tc[[0, -1]] = tc[[-1, 0]]
    d = per_query_results(np.zeros((tc.size, 20)), tc, a.clip_ids)
    with pytest.raises(InputError, match="caption→clip maps differ"):
        stats.check_same_split(a, d, "a.json", "d.json")
    e = per_query_results(np.zeros((a.num_texts, 20)), a.text_clip, a.clip_ids, captions=["x"] * a.num_texts)
    with pytest.raises(InputError, match="caption texts differ"):
        stats.check_same_split(a, e)


def test_holm():
    adjusted = stats.holm([0.01, 0.04, 0.03, None, 0.005])
    assert adjusted[3] is None
    assert [adjusted[i] for i in (0, 1, 2, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert stats.holm([0.2, 0.9]) == [0.4, 0.9] and stats.holm([0.3, 0.1, 0.2]) == pytest.approx([0.4, 0.3, 0.4])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]


def test_compare_many_against_a_baseline_with_holm():
    a, b = _pair(2, 30, 0.5)
    _, c = _pair(2, 30, 1.0)
    systems = [stats.Named(n, stats.directions(pq)) for n, pq in (("dp", a), ("x", b), ("y", c))]
    many = stats.compare_many(systems, "dp", resamples=200, permutations=500, metrics=("R@1", "meanR"))
    res = many.by_system
    assert set(res) == {"x", "y"} and many.baseline == "dp" and "against baseline dp" in stats.format_many(many)
    for d in ("t2a", "a2t"):
        raw = [res[s][d]["R@1"].p for s in ("x", "y")]
        assert [res[s][d]["R@1"].p_holm for s in ("x", "y")] == stats.holm(raw)
    as_json = many.to_dict()
    assert as_json["systems"]["x"]["t2a"]["R@1"]["p_holm"] == res["x"]["t2a"]["R@1"].p_holm
    assert as_json["baseline"] == "dp" and as_json["settings"]["permutations"] == 500
    with pytest.raises(InputError, match="--baseline"):
        stats.compare_many(systems, "nope")


def test_pooled_directions_average_each_query_over_the_seeds():
    a, b = _pair(3, 30, 0.5)
    pooled = stats.pooled_directions([a, b], ["a", "b"])
    qa, qb = t2a_values(a), t2a_values(b)
    for m in stats.POOLED_METRICS:
        np.testing.assert_array_equal(pooled["t2a"].values[m], (qa.values[m] + qb.values[m]) / 2)
        assert point_estimate(pooled["t2a"], m) == pytest.approx(
            (point_estimate(qa, m) + point_estimate(qb, m)) / 2, rel=1e-12)
    assert "medR" not in pooled["t2a"].values and set(pooled) == {"t2a", "a2t"}
    c, _ = _pair(0, 21, 0.0)
    with pytest.raises(InputError, match="a and c are not results on the same split"):
        stats.pooled_directions([a, c], ["a", "c"])


def test_compare_pooled_is_the_comparison_of_seed_averaged_queries():
    a0, b0 = _pair(4, 30, 0.0)
    a1, b1 = _pair(5, 30, 2.0)
    pooled = stats.compare_pooled([a0, a1], [b0, b1], resamples=100, permutations=200, seed=0)
    by_hand = stats.compare_directions(stats.pooled_directions([a0, a1]), stats.pooled_directions([b0, b1]),
                                       100, 200, 0, stats.POOLED_METRICS)
    assert pooled == by_hand and "medR" not in pooled.by_direction["t2a"]
    r1 = pooled.by_direction["t2a"]["R@1"]
    assert r1.diff == pytest.approx((stats.compare(a0, b0, 10, 10).by_direction["t2a"]["R@1"].diff
                                     + stats.compare(a1, b1, 10, 10).by_direction["t2a"]["R@1"].diff) / 2)
    c, _ = _pair(0, 21, 0.0)
    with pytest.raises(InputError, match="not results on the same split"):
        stats.compare_pooled([a0], [c])
