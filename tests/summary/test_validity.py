"""The prompt-level statistics hold their error rates on correlated null data (issue 15).

The same simulation as ``benchmarks/bench_validity.py`` (which ``make bench``
runs with 1,000 datasets for the coverage too): 1,000 seeded null datasets of
9 base prompts x 10 pairs at prompt-level SD 0, 0.5 and 1.0. Type-I rates
are batched and cheap; the coverage uses 300 datasets at the hardest SD here.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_validity as bv
from harness.summary.stats import cluster_groups, prompt_permutation_tests


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, float]]:
    return bv.simulate(coverage_datasets=300, sds=bv.PROMPT_SDS)


@pytest.mark.parametrize("sd", ["0", "0.5", "1"])
def test_type1_rates_of_cluster_separation_and_compare_stay_near_alpha(figures, sd):
    f = figures[sd]
    assert f["datasets"] >= 1000
    assert 0.02 <= f["separation_type1_new"] <= 0.08, f
    assert 0.02 <= f["compare_type1_new"] <= 0.08, f
    # BH over a comparison's 16 null cells: a false call in at most ~5% of comparisons.
    assert f["compare_any_false_call_new"] <= 0.08, f


def test_pairs_as_units_were_anticonservative(figures):
    # What issue 15 measured, reproduced: the old unit manufactured separations once prompts had an effect.
    assert figures["1"]["separation_type1_old"] > 0.3 and figures["1"]["coverage_old"] < 0.8


@pytest.mark.parametrize("sd", ["0", "0.5", "1"])
def test_prompt_level_intervals_cover_the_true_mean(figures, sd):
    assert figures[sd]["coverage_new"] >= 0.92, figures[sd]


def test_the_simulation_runs_the_code_path_of_the_cluster_tests():
    # cluster_groups (what the summary calls per cell) gives the same p as the batched call the simulation makes.
    rng = np.random.default_rng(5)
    d = bv.null_differences(rng, 5, 1.0)
    batched = [r.pvalue for r in prompt_permutation_tests(d.mean(axis=2))]
    prompts = bv.prompt_ids()
    for k in range(5):
        flat = d[k].reshape(-1)
        ids = [f"p{i}" for i in range(flat.size)]
        values = {"a": dict(zip(ids, flat)), "b": dict(zip(ids, np.zeros(flat.size)))}
        _, (comp,) = cluster_groups(values, dict(zip(ids, prompts)))
        assert comp.n_prompts == bv.N_PROMPTS and comp.pvalue == pytest.approx(batched[k], abs=1e-12)
