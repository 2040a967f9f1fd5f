"""The clustered bootstrap: a median's CI when values come in groups that are not independent.

The run's statistics (means, paired tests) are in harness.summary.stats; this
is the one resampling scheme they do not cover, used by the geometry study,
where both signs of a direction (and every direction) come from one position.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def median_ci(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Median with a bootstrap CI that resamples positions (all of a position's values together).

    Both signs of a direction come from one position and are not independent:
    resampling values one by one would understate the interval.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    v, g = v[ok], np.asarray(groups)[ok]
    if v.size == 0:
        return {"n": 0, "n_positions": 0, "median": None, "ci": [None, None]}
    uniq, gi = np.unique(g, return_inverse=True)
    order = np.argsort(v, kind="stable")
    vs, gs = v[order], gi[order]
    med = float(np.median(v))
    lo = hi = med
    if n_boot > 0 and uniq.size > 1:
        rng = np.random.default_rng(seed)
        P = uniq.size
        draws = rng.integers(0, P, size=(n_boot, P)) + (np.arange(n_boot) * P)[:, None]
        counts = np.bincount(draws.ravel(), minlength=n_boot * P).reshape(n_boot, P)  # times each position is drawn
        meds = _weighted_medians(vs, gs, counts)
        lo, hi = (float(x) for x in np.quantile(meds, [(1 - level) / 2, 1 - (1 - level) / 2]))
    return {"n": int(v.size), "n_positions": int(uniq.size), "median": med, "ci": [lo, hi]}


def _weighted_medians(vs: np.ndarray, gs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median of each resample: sorted values ``vs`` of positions ``gs``, position multiplicities ``counts`` [B, P].

    Defined as np.median is (mean of the lower and upper middle values).
    Every resample's median lies near the sample median, so cumulative weights
    are formed only over a central band of the sorted values (the weight below
    the band is one matrix-vector product), widened until every resample's
    two middle values fall inside it: O(B·band) instead of O(B·n).
    """
    n, P = vs.size, counts.shape[1]
    half = (counts @ np.bincount(gs, minlength=P)) / 2.0
    w = 0.05
    while True:
        lo = max(0, int(np.floor((0.5 - w) * n)) - 1)
        hi = min(n, int(np.ceil((0.5 + w) * n)) + 1)
        below = counts @ np.bincount(gs[:lo], minlength=P)
        cw = below[:, None] + np.cumsum(counts[:, gs[lo:hi]], axis=1)
        if ((below < half) & (cw[:, -1] > half)).all() or (lo == 0 and hi == n):
            break
        w *= 2
    i_lo = lo + np.minimum((cw < half[:, None]).sum(axis=1), hi - lo - 1)
    i_hi = lo + np.minimum((cw <= half[:, None]).sum(axis=1), hi - lo - 1)
    return 0.5 * (vs[i_lo] + vs[i_hi])
