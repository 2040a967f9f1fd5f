"""harness.summary.stats against scipy on fixtures, and the clusters on synthetic models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from harness.summary import stats as st
from harness.summary.build import cluster_stats

RNG = np.random.default_rng(7)
# Distance-like fixtures: skewed, bounded below, ties at 0 (the identical-rung shape).
SAMPLES = {
    "gamma40": RNG.gamma(2.0, 0.05, 40),
    "uniform12": RNG.uniform(0, 0.5, 12),
    "zeros_and_some": np.r_[np.zeros(20), RNG.gamma(1.0, 0.2, 10)],
    "large300": RNG.beta(2, 8, 300),
}


def _scipy_ci(data: tuple[np.ndarray, ...], statistic, paired: bool, seed: int) -> tuple[float, float]:
    res = ss.bootstrap(data, statistic, n_resamples=st.BOOTSTRAP_RESAMPLES, method="percentile", paired=paired,
                       confidence_level=0.95, rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_bootstrap_ci_equals_scipy_with_the_same_seed(name):
    x = SAMPLES[name]
    ours = st.bootstrap_ci(x)
    ref = _scipy_ci((x,), lambda a, axis: a.mean(axis=axis), False, st.BOOTSTRAP_SEED)
    # Same draws, same interpolation: equal up to summation order.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_bootstrap_ci_agrees_with_scipy_across_seeds(name):
    # Independent seeds: the endpoints agree within Monte-Carlo error of 2,000 resamples. The 2.5%/97.5%
    # quantile of B resamples has sd ~ sqrt(.025 * .975 / B) / phi(1.96) ~ 0.06 SE for a normal mean, 0.085 SE
    # for the difference of two runs; 0.4 SE leaves room for the skewed fixtures' heavier tail.
    x = SAMPLES[name]
    ours = np.array(st.bootstrap_ci(x, seed=1))
    ref = np.array(_scipy_ci((x,), lambda a, axis: a.mean(axis=axis), False, 2))
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert np.all(np.abs(ours - ref) < 0.4 * se), (ours, ref, se)


def test_bootstrap_diff_ci_equals_scipy_paired_and_unpaired():
    a, b = SAMPLES["gamma40"], SAMPLES["gamma40"] + RNG.normal(0.02, 0.03, 40)
    diff = lambda x, y, axis: y.mean(axis=axis) - x.mean(axis=axis)  # noqa: E731
    np.testing.assert_allclose(st.bootstrap_diff_ci(a, b, paired=True), _scipy_ci((a, b), diff, True, st.BOOTSTRAP_SEED),
                               atol=1e-12)
    c = SAMPLES["uniform12"]
    np.testing.assert_allclose(st.bootstrap_diff_ci(a, c, paired=False), _scipy_ci((a, c), diff, False, st.BOOTSTRAP_SEED),
                               atol=1e-12)


def test_bootstrap_degenerate_cases_are_defined():
    assert np.isnan(st.bootstrap_ci([])).all()
    assert st.bootstrap_ci([0.3]) == (0.3, 0.3)
    assert st.bootstrap_ci(np.zeros(10)) == (0.0, 0.0)  # the identical rung of a deterministic run
    with pytest.raises(ValueError, match="NaN"):
        st.bootstrap_ci([0.1, float("nan")])


def _scipy_perm(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    res = ss.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                              n_resamples=st.PERMUTATIONS, vectorized=True, alternative="two-sided",
                              rng=np.random.default_rng(seed))
    return float(res.pvalue)


@pytest.mark.parametrize("n,shift", [(6, 0.0), (10, 0.05), (12, 0.2), (13, 0.02)])
def test_exact_permutation_p_equals_scipy(n, shift):
    # 2**n <= 10,000 sign patterns: both enumerate them all, so the p-values are equal.
    rng = np.random.default_rng(n)
    x = rng.gamma(2, 0.05, n)
    y = x + shift + rng.normal(0, 0.05, n)
    ours = st.paired_permutation_test(x, y)
    assert ours.exact and ours.n_permutations == 2**n
    assert ours.pvalue == pytest.approx(_scipy_perm(x, y), abs=1e-12)


@pytest.mark.parametrize("n,shift", [(30, 0.0), (40, 0.01), (60, 0.015), (200, 0.004)])
def test_randomized_permutation_p_within_monte_carlo_error_of_scipy(n, shift):
    rng = np.random.default_rng(100 + n)
    x = rng.gamma(2, 0.05, n)
    y = x + shift + rng.normal(0, 0.04, n)
    ours = st.paired_permutation_test(x, y)
    ref = _scipy_perm(x, y, seed=1)
    assert not ours.exact and ours.n_permutations == st.PERMUTATIONS
    # Two independent estimates of the same p: the difference has sd sqrt(2 p (1-p) / N) (x2 for two-sided).
    sd = 2 * np.sqrt(2 * ref * (1 - ref) / st.PERMUTATIONS) + 1e-4
    assert abs(ours.pvalue - ref) < 4 * sd, (ours.pvalue, ref)


def test_permutation_is_deterministic_and_handles_all_zero_differences():
    x = SAMPLES["large300"]
    y = x + 0.01
    assert st.paired_permutation_test(x, y) == st.paired_permutation_test(x, y)
    zero = st.paired_permutation_test(np.zeros(20), np.zeros(20))
    assert zero.pvalue == 1.0 and zero.statistic == 0.0


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(st.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(st.holm([0.5, 0.9]), [1.0, 1.0])
    assert st.holm([]).size == 0


def test_compact_letter_display_properties():
    means = {"a1": 0.1, "a2": 0.11, "mid": 0.2, "b1": 0.3}
    # a1-b1 and a2-b1 separated; mid is between and separated from nobody.
    separated = {frozenset(("a1", "b1")), frozenset(("a2", "b1"))}
    letters = st.compact_letter_display(means, separated)
    assert letters == {"a1": "a", "a2": "a", "mid": "ab", "b1": "b"}
    for g in means:
        for h in means:
            if g < h:
                share = bool(set(letters[g]) & set(letters[h]))
                assert share == (frozenset((g, h)) not in separated)


def test_compact_letter_display_non_transitive_chain():
    # a~b, b~c, but a|c: b carries both letters.
    letters = st.compact_letter_display({"x": 0.1, "y": 0.2, "z": 0.3}, {frozenset(("x", "z"))})
    assert letters == {"x": "a", "y": "ab", "z": "b"}


def _pairs(models: dict[str, np.ndarray], rung: str = "synonym", length: int = 64) -> pd.DataFrame:
    rows = []
    for model, vals in models.items():
        rows += [{"model": model, "variant": "bf16", "rung": rung, "length": length, "pair_id": f"p{i}", "emb_dist": float(v)}
                 for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_clearly_different_models_land_in_different_clusters_and_identical_ones_together():
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 0.03, 40)  # per pair: how hard the pair is, shared by every model
    pairs = _pairs({
        "steady": base,
        "steady-copy": base.copy(),
        "shaky": base + 0.15 + rng.normal(0, 0.03, 40),
    })
    (cell,) = cluster_stats(pairs)
    letters = {m["model"]: m["letters"] for m in cell["models"]}
    assert letters["steady"] == letters["steady-copy"] == "a"
    assert letters["shaky"] == "b"
    comp = {(c["a"], c["b"]): c for c in cell["comparisons"]}
    assert comp[("steady", "steady-copy")]["p"] == 1.0 and not comp[("steady", "steady-copy")]["separated"]
    assert comp[("shaky", "steady")]["separated"] and comp[("shaky", "steady")]["p_holm"] < 0.05


def test_clusters_use_only_shared_pair_ids():
    rng = np.random.default_rng(4)
    base = rng.gamma(2.0, 0.03, 30)
    pairs = _pairs({"m1": base, "m2": base + 0.2})
    # m2 also has pairs m1 lacks (dropped by m1's tokenizer): they must not enter the test.
    extra = pd.DataFrame([{"model": "m2", "variant": "bf16", "rung": "synonym", "length": 64, "pair_id": f"x{i}",
                           "emb_dist": 0.0} for i in range(50)])
    (cell,) = cluster_stats(pd.concat([pairs, extra], ignore_index=True))
    (comp,) = cell["comparisons"]
    assert comp["n_shared"] == 30 and comp["mean_diff"] == pytest.approx(-0.2)
    assert comp["separated"]


def test_models_without_shared_pairs_are_not_separated():
    pairs = pd.concat([_pairs({"m1": np.full(5, 0.1)}), _pairs({"m2": np.full(5, 0.9)}).assign(
        pair_id=lambda d: "other" + d["pair_id"])], ignore_index=True)
    (cell,) = cluster_stats(pairs)
    (comp,) = cell["comparisons"]
    assert comp["n_shared"] == 0 and comp["p"] is None and not comp["separated"]
    assert {m["letters"] for m in cell["models"]} == {"a"}


def test_batched_permutation_tests_equal_single_calls():
    rng = np.random.default_rng(9)
    for n in (9, 50):  # exact and randomized
        d = rng.normal(0.01, 0.05, (n, 4))
        batched = st.paired_permutation_tests(d)
        single = [st.paired_permutation_test(d[:, k], np.zeros(n)) for k in range(4)]
        # The same sign patterns: equal p-values; the means may differ in the last bit (BLAS summation order).
        assert [r.pvalue for r in batched] == [r.pvalue for r in single]
        assert [r.statistic for r in batched] == pytest.approx([r.statistic for r in single], rel=1e-12)
