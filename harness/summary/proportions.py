"""Intervals for shares of 0/1 outcomes (accuracy, flip rate) whose pairs cluster in base prompts.

Why not the cluster bootstrap used for distances: at a low rate most datasets
hold zero or one event, and every resample of zero events is zero, so the
percentile interval is [0, 0] (at a true flip rate of 2% with one pair per
prompt it covered 28% of the time; issue 30). A score interval never collapses
at 0 or 1.

Method: the Agresti-Coull interval (Agresti & Coull 1998: add z²/2 successes
and z²/2 failures, then the Wald interval) at an *effective* sample size
n_eff = p̂(1 - p̂) / Var(p̂) (Kish's design effect, as in survey
practice for clustered binary outcomes), where Var(p̂) is the linearization
variance of the ratio estimator over base prompts (p̂ is the mean over pairs,
the number the tables print). n_eff is kept in [prompts, pairs]: pairs is no
clustering at all, prompts is complete clustering (every prompt's pairs
agree) -- no design can be worse, so this bound is what a sample without
events (p̂ = 0 or 1, where the variance says nothing) gets.

Agresti-Coull rather than Wilson: near 0 Wilson's lower end is too high for
one or two events and its coverage dips under 0.9 at n·p ≈ 1; Agresti-Coull's
wider interval keeps it above the nominal level there. ``tests/summary/
test_proportions.py`` checks by simulation: coverage >= 0.92 at true rates
2%, 5% and 30%, with one and eight pairs per prompt (prompt rates drawn from a
Beta with intra-prompt correlation 0.2).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as _ss

from harness.summary.stats import CONFIDENCE, MIN_CI_PROMPTS

METHOD = "agresti_coull_design_effect"
"""Recorded next to the interval (``ci_method``) so a reader knows it is not the bootstrap."""


def effective_n(values: np.ndarray, prompts: Sequence[str] | np.ndarray) -> tuple[float, int, int]:
    """(n_eff, base prompts, pairs) of 0/1 ``values`` clustered in ``prompts``: Kish's n / design effect, in [prompts, pairs]."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ids, inv = np.unique(np.asarray(prompts).astype(str).reshape(-1), return_inverse=True)
    k, n = int(ids.size), int(v.size)
    p = float(v.mean())
    if k < 2 or p in (0.0, 1.0):
        return float(k), k, n
    sums = np.bincount(inv, weights=v, minlength=k)
    counts = np.bincount(inv, minlength=k).astype(np.float64)
    # Linearization (Taylor) variance of the ratio sum(y) / sum(m) with prompts as the sampling units.
    var = k / (k - 1) * float(np.sum((sums - p * counts) ** 2)) / n**2
    n_eff = p * (1.0 - p) / var if var > 0 else float(n)
    return float(min(max(n_eff, k), n)), k, n


def proportion_ci(values: Sequence[float] | np.ndarray, prompts: Sequence[str] | np.ndarray,
                  level: float = CONFIDENCE) -> tuple[float, float]:
    """Agresti-Coull interval of the share of ones at the design-effect-adjusted n; (nan, nan) below MIN_CI_PROMPTS prompts.

    ``values`` are 0/1 (NaN is the caller's to drop and count); the point estimate the interval is about is their
    mean over pairs.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(v).any():
        raise ValueError("proportion input contains NaN")
    if not np.isin(v, (0.0, 1.0)).all():
        raise ValueError("proportion input must be 0/1")
    if v.size == 0:
        return (float("nan"), float("nan"))
    n_eff, k, _ = effective_n(v, prompts)
    if k < MIN_CI_PROMPTS:
        return (float("nan"), float("nan"))
    z = float(_ss.norm.ppf(0.5 + level / 2.0))
    p = float(v.mean())
    n_t = n_eff + z * z
    p_t = (p * n_eff + z * z / 2.0) / n_t
    half = z * np.sqrt(p_t * (1.0 - p_t) / n_t)
    return (float(max(0.0, p_t - half)), float(min(1.0, p_t + half)))
