"""Frozen records of the summary stage: the results of its statistical tests (harness.summary.stats)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PermutationResult:
    """One sign-flip permutation test of mean = 0 over base prompts (prompt_permutation_tests)."""

    statistic: float
    """Observed mean of the per-prompt mean differences (each prompt once)."""
    pvalue: float
    """Two-sided, scipy's convention: min(1, 2 * min(P(T <= t), P(T >= t))); +1-corrected when randomized."""
    n_prompts: int
    """Units whose signs were flipped."""
    n_permutations: int
    """Sign patterns evaluated (2**n_prompts when exact)."""
    exact: bool
    """True when every sign pattern was enumerated."""


@dataclass(frozen=True)
class Comparison:
    """One pairwise test of two groups (cluster_groups)."""

    a: str
    """First group (groups are compared in sorted name order)."""
    b: str
    """Second group; mean_diff is a - b."""
    n_shared: int
    """Pair ids both groups were scored on; the test uses only these."""
    n_prompts: int
    """Base prompts among the shared pairs: the units of the test."""
    mean_diff: float
    """a - b over the shared pairs, the mean over base prompts of each prompt's mean difference (the test's unit
    and weighting); nan when none is shared."""
    pvalue: float | None
    """Sign-flip test on the per-prompt mean differences; None when no pair is shared (nothing to test)."""
    pvalue_holm: float | None
    """Holm-adjusted within the call's family (every tested pair of groups); None when untested."""
    separated: bool
    """pvalue_holm < alpha: the two groups are told apart (never when no pair is shared)."""
    diff_ci95: tuple[float, float] = (float("nan"), float("nan"))
    """95% CI of mean_diff, resampling base prompts (harness.summary.stats.cluster_bootstrap_diff_ci); nan below
    ``MIN_CI_PROMPTS`` shared prompts."""
    prompt_sd: float = float("nan")
    """SD (ddof 1) over base prompts of the per-prompt mean differences the test is on: what its power depends on
    (harness.summary.power); nan with fewer than two prompts."""


@dataclass(frozen=True)
class VarianceFit:
    """Method-III variance components of one outcome (harness.summary.variance.henderson3), not truncated at 0."""

    components: dict[str, float]
    """Factor -> estimated variance of its random effect (negative when the moment equation says so)."""
    residual: float
    """Residual variance: RSS of the full additive model over its residual degrees of freedom."""
    df: dict[str, int]
    """Factor -> degrees of freedom it adds after every other factor (its column-space rank gain)."""
    df_residual: int
    """n minus the rank of the full model."""
    n: int
    """Rows (pairs) fitted."""
