"""Typed records of the stretching maths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerIteration:
    """Result of power iteration for the largest singular value of one Jacobian."""

    sigma: float
    """Estimate of σ_max: ‖J v‖ for the final unit vector v (a lower bound that rises to σ_max)."""
    iterations: int
    """JVP/VJP steps taken."""
    converged: bool
    """The estimate changed by at most ``tol`` relative between the last two steps."""
    residual: float
    """‖JᵀJ v − σ² v‖ / σ² at the last step (0 for an exact top singular vector)."""
    tol: float
    """Relative tolerance on successive estimates."""
    max_iter: int
    """Iteration cap."""
    jv_mode: str
    """How J v was computed: ``jvp`` (torch.func.jvp) or ``vjp_transpose`` (VJP of the VJP)."""


@dataclass(frozen=True)
class GrowthRate:
    """Finite-time growth of a distance d_t along generated steps t = 0..T (a Lyapunov-style estimate)."""

    slope: float
    """Least-squares slope of ln d_t against t (nats per step); NaN with fewer than 2 usable steps."""
    endpoint: float
    """(ln d_T − ln d_0) / T over the window (nats per step); NaN when undefined."""
    n_steps: int
    """Steps in the window with a finite, positive d_t (the ones the slope uses)."""
    n_zero: int
    """Steps in the window where d_t was exactly 0 (no log; counted, not dropped silently)."""


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman rank correlation with a bootstrap CI over the paired units."""

    rho: float
    """Spearman's ρ; NaN when undefined (fewer than 3 units, or a constant side)."""
    ci_low: float
    """Lower end of the 95% percentile bootstrap CI (NaN when not computable)."""
    ci_high: float
    """Upper end of the 95% percentile bootstrap CI."""
    n: int
    """Number of paired units (e.g. models)."""
    note: str
    """Why a value is NaN, or what the interval can and cannot say."""


@dataclass(frozen=True)
class ProfileSummary:
    """Median layer profile of one model × rung over base prompts."""

    median: np.ndarray
    """[K] median over base prompts of each prompt's mean profile."""
    ci_low: np.ndarray
    """[K] lower end of the 95% bootstrap CI (base prompts resampled)."""
    ci_high: np.ndarray
    """[K] upper end of the 95% bootstrap CI."""
    n_prompts: np.ndarray
    """[K] base prompts with a finite value at that layer."""
    n_pairs: int
    """Pairs that entered the summary."""
    growth_layer: int
    """Layer index l ≥ 1 where the median rises most from layer l − 1 (−1 when nothing is finite)."""
    growth: float
    """That rise, median_l − median_{l−1} (NaN when undefined)."""
