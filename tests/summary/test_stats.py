"""harness.summary.stats: prompt-level intervals and tests against closed forms and brute force, and the clusters."""

from __future__ import annotations

import itertools

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


def _pair_level_scipy_ci(x: np.ndarray, level: float) -> tuple[float, float]:
    res = ss.bootstrap((x,), lambda a, axis: a.mean(axis=axis), n_resamples=st.BOOTSTRAP_RESAMPLES, method="percentile",
                       confidence_level=level, rng=np.random.default_rng(st.BOOTSTRAP_SEED), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def test_expanded_level_by_hand():
    # n = 9: sqrt(9/8) * t_{0.975, 8} = 1.06066 * 2.306004 = 2.445896; 2 Phi(2.445896) - 1 = 0.985552.
    assert st.expanded_level(0.95, 9) == pytest.approx(0.985552, abs=2e-6)
    # Large n: the expansion vanishes.
    assert st.expanded_level(0.95, 10_000) == pytest.approx(0.95, abs=1e-3)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_one_pair_per_prompt_is_the_plain_percentile_bootstrap_at_the_expanded_level(name):
    x = SAMPLES[name]
    prompts = [f"q{i:03d}" for i in range(x.size)]  # sorted = original order: the same resample indices
    ours = st.cluster_bootstrap_ci(x, prompts)
    ref = _pair_level_scipy_ci(x, st.expanded_level(st.CONFIDENCE, x.size))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_the_interval_depends_on_the_number_of_prompts_not_of_pairs():
    x = SAMPLES["uniform12"]
    one = st.cluster_bootstrap_ci(x, [f"q{i}" for i in range(12)])
    # Each prompt's value repeated 8 times (8 pairs sharing one output): the same 12 units, the same interval.
    eight = st.cluster_bootstrap_ci(np.repeat(x, 8), np.repeat([f"q{i}" for i in range(12)], 8))
    np.testing.assert_allclose(eight, one, atol=1e-12)
    # Treating the 96 rows as independent pairs gives a far narrower (false) interval.
    pairs = _pair_level_scipy_ci(np.repeat(x, 8), 0.95)
    assert (pairs[1] - pairs[0]) < 0.5 * (one[1] - one[0])


def test_the_statistic_is_the_mean_over_pairs():
    # Prompt a: 3 pairs at 0; b: 1 pair at 1; c: 2 pairs at 0.5; d: 0.25; e: 0.75 -> mean over pairs 3/8.
    values = [0, 0, 0, 1, 0.5, 0.5, 0.25, 0.75]
    prompts = ["a", "a", "a", "b", "c", "c", "d", "e"]
    lo, hi = st.cluster_bootstrap_ci(values, prompts)
    assert lo < 3 / 8 < hi
    # Every resample is a mean over the pairs of 5 drawn prompts: nothing outside [0, 1] is possible.
    assert 0.0 <= lo and hi <= 1.0


def test_cluster_bootstrap_degenerate_cases_are_defined():
    assert np.isnan(st.cluster_bootstrap_ci([], [])).all()
    # Fewer prompts than the method covers (MIN_CI_PROMPTS): no interval, not a zero-width one.
    assert np.isnan(st.cluster_bootstrap_ci([0.3], ["a"])).all()
    assert np.isnan(st.cluster_bootstrap_ci(np.zeros(10), ["a"] * 5 + ["b"] * 5)).all()
    five = [p for p in "abcde" for _ in range(2)]
    # Constant values (the identical rung of a deterministic run): no zero-width interval, NaN with the reason.
    assert np.isnan(st.cluster_bootstrap_ci(np.zeros(10), five)).all()
    assert st.ci_note(np.zeros(10), five) == "constant values" and st.ci_note([0.3], ["a"]) == "1 prompt (< 5)"
    assert st.ci_note(np.arange(10.0), five) is None
    assert np.isnan(st.cluster_bootstrap_ci(np.arange(8.0), list("aabbccdd"))).all()  # 4 prompts
    # One prompt with spread among its pairs: no prompt-to-prompt spread to resample, so no interval (not zero width).
    assert np.isnan(st.cluster_bootstrap_ci([0.1, 0.2, 0.3], ["a"] * 3)).all()
    with pytest.raises(ValueError, match="NaN"):
        st.cluster_bootstrap_ci([0.1, float("nan")], ["a", "b"])


def test_diff_ci_on_the_same_pairs_equals_the_ci_of_the_differences():
    rng = np.random.default_rng(11)
    prompts = np.repeat([f"q{i}" for i in range(10)], rng.integers(2, 7, 10))
    x = rng.gamma(2, 0.05, prompts.size)
    y = x + rng.normal(0.02, 0.03, prompts.size)
    lo, hi, n = st.cluster_bootstrap_diff_ci(x, prompts, y, prompts)
    # Same resample indices, same counts: sum(y)/c - sum(x)/c = sum(y - x)/c.
    np.testing.assert_allclose((lo, hi), st.cluster_bootstrap_ci(y - x, prompts), atol=1e-12)
    assert n == 10
    # Prompts on one side only are left out and the shared count says so.
    lo2, hi2, n2 = st.cluster_bootstrap_diff_ci(x, prompts, np.append(y, 5.0), np.append(prompts, "extra"))
    assert n2 == 10 and (lo2, hi2) == pytest.approx((lo, hi), abs=1e-12)


def _brute_force_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of mean(d) over all 2**n sign patterns, scipy's convention."""
    signs = np.array(list(itertools.product((1, -1), repeat=d.size)), dtype=np.float64)
    null = signs @ d / d.size
    t = d.mean()
    tol = abs(t) * np.finfo(np.float64).eps * 100
    return float(min(1.0, 2 * min(np.mean(null <= t + tol), np.mean(null >= t - tol))))


@pytest.mark.parametrize("n,shift", [(6, 0.0), (9, 0.05), (12, 0.2), (13, 0.02)])
def test_exact_sign_flip_p_equals_brute_force_enumeration(n, shift):
    rng = np.random.default_rng(n)
    d = shift + rng.normal(0, 0.05, n)
    (ours,) = st.prompt_permutation_tests(d[None])
    assert ours.exact and ours.n_permutations == 2**n and ours.n_prompts == n
    assert ours.pvalue == pytest.approx(_brute_force_sign_flip_p(d), abs=1e-12)


def test_randomized_sign_flip_p_within_monte_carlo_error_of_the_exact_one():
    rng = np.random.default_rng(15)
    d = 0.01 + rng.normal(0, 0.04, 15)  # 2**15 > 10,000: random patterns
    (ours,) = st.prompt_permutation_tests(d[None])
    exact = _brute_force_sign_flip_p(d)
    assert not ours.exact and ours.n_permutations == st.PERMUTATIONS
    sd = 2 * np.sqrt(exact * (1 - exact) / st.PERMUTATIONS) + 1e-4
    assert abs(ours.pvalue - exact) < 4 * sd, (ours.pvalue, exact)


def test_the_paired_test_flips_prompts_not_pairs():
    # 4 prompts x 10 pairs, every pair 0.1 higher on x: per prompt a difference of 0.1, four units.
    prompts = np.repeat(["a", "b", "c", "d"], 10)
    y = np.linspace(0, 1, 40)
    res = st.paired_prompt_test(y + 0.1, y, prompts)
    # All four signs agree: the most extreme of 2**4 patterns, two-sided p = 2/16 -- not the 2/2**40 of 40 "pairs".
    assert res.n_prompts == 4 and res.exact and res.pvalue == pytest.approx(2 / 16)
    assert res.statistic == pytest.approx(0.1)


def test_one_prompt_can_never_be_significant():
    (one,) = st.prompt_permutation_tests(np.array([[0.3]]))
    assert one.pvalue == 1.0 and one.n_prompts == 1 and one.exact and one.n_permutations == 2
    assert _brute_force_sign_flip_p(np.array([0.3])) == 1.0


def test_permutation_is_deterministic_and_handles_all_zero_differences():
    d = RNG.normal(0, 1, (3, 20))
    assert st.prompt_permutation_tests(d) == st.prompt_permutation_tests(d)
    (zero,) = st.prompt_permutation_tests(np.zeros((1, 20)))
    assert zero.pvalue == 1.0 and zero.statistic == 0.0


def test_batched_permutation_tests_equal_single_calls():
    rng = np.random.default_rng(9)
    for n in (9, 20):  # exact and randomized
        d = rng.normal(0.01, 0.05, (4, n))
        batched = st.prompt_permutation_tests(d)
        single = [st.prompt_permutation_tests(d[k:k + 1])[0] for k in range(4)]
        assert [r.pvalue for r in batched] == [r.pvalue for r in single]


def test_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04 (step-up minimum from the top)
    np.testing.assert_allclose(st.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    assert st.benjamini_hochberg([]).size == 0


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
        # Two pairs per base prompt, as a ladder gives (pairs of one prompt share its output).
        rows += [{"model": model, "variant": "bf16", "rung": rung, "length": length, "pair_id": f"p{i}",
                  "prompt_id": f"q{i // 2}", "emb_dist": float(v)} for i, v in enumerate(vals)]
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
                           "prompt_id": f"x{i}", "emb_dist": 0.0} for i in range(50)])
    (cell,) = cluster_stats(pd.concat([pairs, extra], ignore_index=True))
    (comp,) = cell["comparisons"]
    assert comp["n_shared"] == 30 and comp["n_prompts"] == 15 and comp["mean_diff"] == pytest.approx(-0.2)
    assert comp["separated"]


def test_models_without_shared_pairs_are_not_separated():
    pairs = pd.concat([_pairs({"m1": np.full(5, 0.1)}), _pairs({"m2": np.full(5, 0.9)}).assign(
        pair_id=lambda d: "other" + d["pair_id"])], ignore_index=True)
    (cell,) = cluster_stats(pairs)
    (comp,) = cell["comparisons"]
    assert comp["n_shared"] == 0 and comp["p"] is None and not comp["separated"]
    assert {m["letters"] for m in cell["models"]} == {"a"}
