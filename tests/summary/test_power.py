"""The minimum detectable difference checked against the test it is about, by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.summary.power import POWER, mde, min_prompts, power_at, prompt_sd, prompts_needed
from harness.summary.stats import ALPHA, prompt_permutation_tests


@pytest.mark.parametrize("n, sd", [(8, 0.05), (16, 0.12), (40, 0.3)])
def test_planted_mde_is_detected_about_80_percent_of_the_time(n, sd):
    # 1,000 datasets of n per-prompt differences with true mean = the stated MDE, tested with the run's own
    # sign-flip permutation test (one batched call): the rejection rate is the power the MDE promises.
    delta = mde(sd, n)
    rng = np.random.default_rng(7 + n)
    d = rng.normal(delta, sd, size=(1000, n))
    p = np.array([r.pvalue for r in prompt_permutation_tests(d, n_permutations=4000)])
    rate = float(np.mean(p < ALPHA))
    # Binomial SD at 1,000 datasets is 0.013; the t-approximation of the permutation test adds a little.
    assert 0.74 <= rate <= 0.86, (n, sd, delta, rate)


def test_below_the_fewest_prompts_nothing_is_detectable():
    assert min_prompts() == 6  # 2 / 2**5 = 0.0625 > 0.05
    assert mde(0.1, 5) == math.inf and power_at(10.0, 0.1, 5) == 0.0
    # The permutation test agrees: 5 prompts all far from 0 still give p = 2/32.
    r = prompt_permutation_tests(np.full((1, 5), 3.0))[0]
    assert r.pvalue == pytest.approx(2 / 32)


def test_mde_is_where_power_reaches_the_target_and_shrinks_like_sqrt_n():
    for n in (6, 16, 200):
        m = mde(0.2, n)
        assert power_at(m, 0.2, n) == pytest.approx(POWER, abs=1e-9)
        assert power_at(0.99 * m, 0.2, n) < POWER < power_at(1.01 * m, 0.2, n)
    # Large n: (z_0.975 + z_0.8) * sd / sqrt(n) = 2.8016 * sd / sqrt(n).
    assert mde(1.0, 10_000) == pytest.approx(2.8016 / 100, rel=2e-3)


def test_prompts_needed_inverts_mde():
    for n in (6, 9, 16, 31, 200):
        m = mde(0.15, n)
        assert prompts_needed(m * 1.000001, 0.15) == n
    assert prompts_needed(0.0, 0.1) is None and prompts_needed(0.1, float("nan")) is None


def test_zero_and_missing_spread():
    assert mde(0.0, 16) == 0.0  # the identical rung's exact zeros: any consistent shift shows
    assert math.isnan(mde(float("nan"), 16))
    assert math.isnan(prompt_sd(np.array([0.3, np.nan])))
    assert prompt_sd(np.array([1.0, 3.0])) == pytest.approx(math.sqrt(2.0))


def test_comparisons_and_cells_carry_ci_and_mde():
    import pandas as pd

    from harness.summary.build import cell_stats, cluster_stats

    rng = np.random.default_rng(3)
    rows = []
    for k in range(12):
        base = rng.uniform(0.1, 0.5)
        for j in range(3):
            pid = f"p{k}-{j}"
            for model, shift in (("m1", 0.0), ("m2", 0.08)):
                rows.append({"model": model, "variant": "bf16", "rung": "typo", "length": 16, "pair_id": pid,
                             "prompt_id": f"p{k}", "emb_dist": base + shift + rng.normal(0, 0.03), "first_div": 1})
    pairs = pd.DataFrame(rows)
    (c,) = cluster_stats(pairs)
    (x,) = c["comparisons"]
    lo, hi = x["diff_ci95"]
    assert lo < x["mean_diff"] < hi < 0  # m1 - m2 is about -0.08
    per = (pairs[pairs.model == "m1"].set_index("pair_id")["emb_dist"]
           - pairs[pairs.model == "m2"].set_index("pair_id")["emb_dist"]).groupby(lambda i: i.split("-")[0]).mean()
    assert x["prompt_sd"] == pytest.approx(float(per.std(ddof=1)))
    assert x["mde"] == pytest.approx(mde(float(per.std(ddof=1)), 12))
    cells = cell_stats(pairs)
    m1 = next(r for r in cells if r["model"] == "m1")
    sd1 = float(pairs[pairs.model == "m1"].groupby("prompt_id")["emb_dist"].mean().std(ddof=1))
    assert m1["emb_dist"]["mde"] == pytest.approx(mde(sd1, 12))
