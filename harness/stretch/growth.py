"""Finite-time growth of a distance along the generation, drift growth over bit widths, rank correlation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from harness.stretch.records import GrowthRate, RankCorrelation

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261201
REFERENCE_BITS = 16
MIN_UNITS_FOR_CI = 5


def growth_rate(d: Sequence[float] | np.ndarray) -> GrowthRate:
    """Growth of ``d_t`` over steps ``t = 0..T``: the least-squares slope of ``ln d_t`` and the endpoint rate.

    A positive rate means the distance grows by ``e^rate`` per step (a
    finite-time Lyapunov exponent of the perturbation along this trajectory).
    Steps with ``d_t = 0`` have no logarithm: they are counted in ``n_zero``
    and left out of the slope; the endpoint rate is NaN unless both ends are
    positive.
    """
    d = np.asarray(d, dtype=np.float64)
    t = np.arange(d.size, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    n_zero = int(np.sum(d == 0))
    slope = float(stats.linregress(t[ok], np.log(d[ok])).slope) if ok.sum() >= 2 and np.ptp(t[ok]) > 0 else float("nan")
    endpoint = float((np.log(d[-1]) - np.log(d[0])) / (d.size - 1)) if d.size >= 2 and ok[0] and ok[-1] else float("nan")
    return GrowthRate(slope, endpoint, int(ok.sum()), n_zero)


def drift_growth(bits: Sequence[float], drift: Sequence[float]) -> float:
    """Least-squares slope of drift against halvings of the bit width, ``log2(16 / bits)``; NaN if < 2 points."""
    b = np.asarray(bits, dtype=np.float64)
    y = np.asarray(drift, dtype=np.float64)
    ok = np.isfinite(b) & np.isfinite(y) & (b > 0)
    x = np.log2(REFERENCE_BITS / b[ok])
    if ok.sum() < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(stats.linregress(x, y[ok]).slope)


def rank_correlation(x: Sequence[float], y: Sequence[float], seed: int = BOOTSTRAP_SEED) -> RankCorrelation:
    """Spearman ρ of paired units with a percentile bootstrap CI that resamples the units."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    dropped = int((~ok).sum())
    extra = f"; {dropped} unit(s) without both values left out" if dropped else ""
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return RankCorrelation(float("nan"), float("nan"), float("nan"), n,
                               f"undefined: {n} unit(s) with both values, or a constant side{extra}")
    rho = float(stats.spearmanr(a, b).statistic)
    if n < MIN_UNITS_FOR_CI:
        return RankCorrelation(rho, float("nan"), float("nan"), n,
                               f"n = {n} units: no interval (a bootstrap over fewer than {MIN_UNITS_FOR_CI} units only "
                               f"reshuffles them; with 3 units every ordering has probability 1/6){extra}")

    def stat(i):
        i = np.asarray(i, dtype=int)
        xa, xb = a[i], b[i]
        if np.ptp(xa) == 0 or np.ptp(xb) == 0:
            return np.nan  # a resample with one distinct value has no rank correlation
        return stats.spearmanr(xa, xb).statistic

    rng = np.random.default_rng(seed)
    boots = np.array([stat(rng.integers(0, n, n)) for _ in range(BOOTSTRAP_RESAMPLES)], dtype=np.float64)
    finite = boots[np.isfinite(boots)]
    lo, hi = (np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan))
    note = (f"n = {n} units: {BOOTSTRAP_RESAMPLES - finite.size} of {BOOTSTRAP_RESAMPLES} resamples had a constant "
            f"side and were left out of the interval{extra}")
    return RankCorrelation(rho, float(lo), float(hi), n, note)


def prompt_mean_ci(values: Sequence[float], groups: Sequence[str], seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean over base prompts of each prompt's mean value, with a percentile bootstrap CI resampling prompts.

    NaN values are left out and counted (``n_missing``); a prompt with only
    NaN values does not count as a prompt.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(list(groups))
    ok = np.isfinite(v)
    per = np.array([v[ok & (g == k)].mean() for k in sorted(set(g[ok].tolist()))], dtype=np.float64)
    out = {"mean": float("nan"), "ci": [float("nan"), float("nan")], "n_prompts": int(per.size),
           "n_values": int(ok.sum()), "n_missing": int((~ok).sum())}
    if per.size == 0:
        return out
    out["mean"] = float(per.mean())
    if per.size == 1 or np.all(per == per[0]):
        out["ci"] = [float(per[0]), float(per[0])]
        return out
    res = stats.bootstrap((per,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                          rng=np.random.default_rng(seed))
    out["ci"] = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    return out
