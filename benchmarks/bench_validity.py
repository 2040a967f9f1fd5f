"""Validity of the run-level statistics: error rates and coverage by simulation (issue 15).

Not a speed benchmark: it checks that the harness's tests and intervals hold
their nominal rates when the pairs of one base prompt are correlated. Seeded
null datasets, as in the issue: 9 base prompts x 10 pairs per prompt,
residual SD 1.0, a prompt-level effect of SD 0, 0.5 and 1.0 shared by a
prompt's pairs (pairs of one prompt share side A's output), and no true
difference.

For each prompt-level SD, new (base prompt as the unit; the harness's own
functions) against old (each pair its own unit; the algorithm harness/summary/stats.py
used before issue 15, copied below):

- cluster separation: type-I rate of a two-model comparison (Holm over a
  family of one is the raw p). New: ``harness.summary.stats.prompt_permutation_tests``
  on the per-prompt mean differences, all 2**9 sign patterns (exact), batched
  over datasets -- the call ``cluster_groups`` makes per cell (the test suite
  checks both give the same p); old: sign flips per pair, 10,000 patterns.
- ``compare``: per cell, a false "regressed"/"improved" at threshold 0 (new:
  the same test, verdict by ``harness.compare._verdict``); per run
  comparison, the share of comparisons of 16 null cells with any false call
  (new: Benjamini-Hochberg over the 16; old: each cell's CI alone).
- 95% interval coverage of the true mean of one model's values. New:
  ``harness.summary.stats.cluster_bootstrap_ci`` (2,000 resamples, the same call the
  summary makes); old: the pair-level percentile bootstrap.

Targets (issue 15): type-I in [0.02, 0.08] for separation and compare,
coverage >= 0.92, at every SD. ``--quick`` uses 300 datasets for the coverage
(type-I rates always use the full count: they are batched and cheap).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Outcome, Row

N_DATASETS = 1000
N_PROMPTS = 9
PAIRS_PER_PROMPT = 10
RESIDUAL_SD = 1.0
PROMPT_SDS = (0.0, 0.5, 1.0)
COMPARE_CELLS = 16
"""Cells of one simulated `compare` (e.g. 8 rungs x 2 lengths)."""
TRUE_MEAN = 0.3
SEED = 20261201
TYPE1_RANGE = (0.02, 0.08)
COVERAGE_MIN = 0.92
OLD_PERMUTATIONS = 10_000


def null_differences(rng: np.random.Generator, n: int, prompt_sd: float) -> np.ndarray:
    """(n datasets, prompts, pairs) of per-pair differences: prompt effect + residual, mean 0."""
    u = rng.normal(0.0, prompt_sd, (n, N_PROMPTS, 1)) if prompt_sd > 0 else np.zeros((n, N_PROMPTS, 1))
    return u + rng.normal(0.0, RESIDUAL_SD, (n, N_PROMPTS, PAIRS_PER_PROMPT))


def prompt_ids() -> np.ndarray:
    return np.repeat([f"q{i}" for i in range(N_PROMPTS)], PAIRS_PER_PROMPT)


# --- old: each pair its own unit (harness/summary/stats.py before issue 15) ----------

def old_pair_tests(d: np.ndarray, seed: int = 20261122) -> np.ndarray:
    """Two-sided sign-flip p per row of (datasets, pairs): 10,000 random patterns, +1 correction."""
    n = d.shape[1]
    signs = 1.0 - 2.0 * np.random.default_rng(seed).integers(0, 2, size=(OLD_PERMUTATIONS, n))
    null = signs @ d.T / n  # (patterns, datasets)
    obs = d.mean(axis=1)
    gamma = np.abs(obs) * np.finfo(np.float64).eps * 100
    p_less = (np.count_nonzero(null <= obs + gamma, axis=0) + 1) / (OLD_PERMUTATIONS + 1)
    p_greater = (np.count_nonzero(null >= obs - gamma, axis=0) + 1) / (OLD_PERMUTATIONS + 1)
    return np.minimum(1.0, 2.0 * np.minimum(p_less, p_greater))


def old_pair_cis(v: np.ndarray, resamples: int = 2000, seed: int = 20261121) -> np.ndarray:
    """(datasets, 2) percentile 95% CIs resampling pairs (the old ``bootstrap_ci``), one draw matrix for all rows."""
    idx = np.random.default_rng(seed).integers(0, v.shape[1], size=(resamples, v.shape[1]))
    means = v[:, idx].mean(axis=2)  # (datasets, resamples)
    return np.quantile(means, [0.025, 0.975], axis=1).T


# --- the simulation -------------------------------------------------------------

def simulate(n_datasets: int = N_DATASETS, coverage_datasets: int = N_DATASETS, sds: tuple[float, ...] = PROMPT_SDS,
             seed: int = SEED) -> dict[str, dict[str, float]]:
    """Per prompt-level SD: type-I rates and coverage, old and new (see the module docstring)."""
    from harness.compare import IMPROVED, REGRESSED, _verdict
    from harness.summary.stats import benjamini_hochberg, cluster_bootstrap_ci, prompt_permutation_tests

    rng = np.random.default_rng(seed)
    prompts = prompt_ids()
    out: dict[str, dict[str, float]] = {}
    for sd in sds:
        d = null_differences(rng, n_datasets, sd)
        per_prompt = d.mean(axis=2)
        new_p = np.array([r.pvalue for r in prompt_permutation_tests(per_prompt)])
        flat = d.reshape(n_datasets, -1)
        old_p = old_pair_tests(flat)
        change = flat.mean(axis=1)
        new_called = np.array([_verdict(c, p, 0.0) in (REGRESSED, IMPROVED) for c, p in zip(change, new_p)])
        old_ci = old_pair_cis(flat)
        old_called = (old_ci[:, 0] > 0) | (old_ci[:, 1] < 0)  # the old compare: CI excludes 0 (threshold 0)

        # One `compare` = COMPARE_CELLS null cells; BH over them (new) versus each cell alone (old).
        runs = n_datasets // COMPARE_CELLS
        fam_p = new_p[: runs * COMPARE_CELLS].reshape(runs, COMPARE_CELLS)
        fam_change = change[: runs * COMPARE_CELLS].reshape(runs, COMPARE_CELLS)
        fam_new = np.array([any(_verdict(c, q, 0.0) in (REGRESSED, IMPROVED) for c, q in zip(cs, benjamini_hochberg(ps)))
                            for cs, ps in zip(fam_change, fam_p)])
        fam_old = old_called[: runs * COMPARE_CELLS].reshape(runs, COMPARE_CELLS).any(axis=1)

        # Coverage of one model's mean: values = true mean + the same correlated structure.
        v = TRUE_MEAN + null_differences(rng, coverage_datasets, sd).reshape(coverage_datasets, -1)
        new_cover = np.mean([lo <= TRUE_MEAN <= hi for lo, hi in (cluster_bootstrap_ci(row, prompts) for row in v)])
        old_ci_v = old_pair_cis(v)
        old_cover = np.mean((old_ci_v[:, 0] <= TRUE_MEAN) & (TRUE_MEAN <= old_ci_v[:, 1]))
        out[f"{sd:g}"] = {
            "separation_type1_new": float(np.mean(new_p < 0.05)), "separation_type1_old": float(np.mean(old_p < 0.05)),
            "compare_type1_new": float(new_called.mean()), "compare_type1_old": float(old_called.mean()),
            "compare_any_false_call_new": float(fam_new.mean()), "compare_any_false_call_old": float(fam_old.mean()),
            "coverage_new": float(new_cover), "coverage_old": float(old_cover),
            "datasets": n_datasets, "coverage_datasets": coverage_datasets, "compare_runs": runs,
        }
    return out


def meets_targets(fig: dict[str, float]) -> dict[str, bool]:
    lo, hi = TYPE1_RANGE
    return {"separation": lo <= fig["separation_type1_new"] <= hi, "compare": lo <= fig["compare_type1_new"] <= hi,
            "coverage": fig["coverage_new"] >= COVERAGE_MIN}


def table(figures: dict[str, dict[str, float]]) -> str:
    head = ("prompt SD", "separation old", "separation new", "compare old", "compare new",
            f"any false call in {COMPARE_CELLS} cells old", "new", "coverage old", "coverage new")
    lines = [" | ".join(head)]
    for sd, f in figures.items():
        lines.append(" | ".join([sd] + [f"{f[k]:.3f}" for k in (
            "separation_type1_old", "separation_type1_new", "compare_type1_old", "compare_type1_new",
            "compare_any_false_call_old", "compare_any_false_call_new", "coverage_old", "coverage_new")]))
    return "\n".join(lines)


def run(quick: bool = False) -> Outcome:
    figures = simulate(coverage_datasets=300 if quick else N_DATASETS)
    rows = []
    for sd, f in figures.items():
        ok = meets_targets(f)
        rows.append(Row(f"validity_type1_sd{sd}", f"separation {f['separation_type1_new']:.3f} (old {f['separation_type1_old']:.3f}), "
                        f"compare {f['compare_type1_new']:.3f} (old {f['compare_type1_old']:.3f})",
                        f"type-I in [{TYPE1_RANGE[0]}, {TYPE1_RANGE[1]}]", f["separation_type1_new"],
                        f"{f['separation_type1_new']:.3f}", ok["separation"] and ok["compare"]))
        rows.append(Row(f"validity_coverage_sd{sd}", f"95% CI coverage {f['coverage_new']:.3f} (old {f['coverage_old']:.3f})",
                        f">= {COVERAGE_MIN}", f["coverage_new"], f"{f['coverage_new']:.3f}", ok["coverage"]))
    rows[-1].info.append(f"validity ({N_DATASETS} null datasets per SD, {N_PROMPTS} prompts x {PAIRS_PER_PROMPT} pairs):\n"
                         + table(figures))
    return Outcome(rows, figures)


if __name__ == "__main__":
    import sys

    figs = simulate(coverage_datasets=300 if "--quick" in sys.argv else N_DATASETS)
    print(table(figs))
    sys.exit(0 if all(all(meets_targets(f).values()) for f in figs.values()) else 1)
