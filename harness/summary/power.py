"""Power of the prompt-level test: the smallest difference a run could have detected, and prompts needed.

The run's tests are sign-flip permutation tests on per-prompt mean differences
(:func:`harness.summary.stats.prompt_permutation_tests`), two-sided at
``ALPHA``. For prompt-level values that are roughly normal, their power at n
prompts is that of the one-sample t-test on the same n values, which has a
closed form through the noncentral t distribution (scipy's ``nct``): power(δ) =
P(|T| > t_crit) with T ~ nct(n - 1, δ √n / σ). The minimum detectable
difference (MDE) is the δ at which that power reaches ``POWER``, solved with
``brentq``. ``tests/summary/test_power.py`` checks by simulation, with the
permutation test itself, that a planted δ equal to the stated MDE is detected
about 80% of the time.

Two facts the closed form alone would miss:

- A sign-flip test over n prompts has only 2**n sign patterns, so its smallest
  two-sided p-value is 2 / 2**n: below ``MIN_PROMPTS`` (6) prompts it can never
  reach p < 0.05, whatever the difference. The MDE is then infinite, and
  :func:`mde` says so instead of printing the t-test's optimistic figure.
- σ is the sample SD of the per-prompt values (ddof 1): each base prompt counts
  once, the unit the test resamples. A cell whose prompts all have the same value
  (the identical rung's exact zeros) has σ = 0 and an MDE of 0: any consistent
  shift would be detected.

What σ means decides what the MDE is about. Next to a rung mean, σ is the SD of
that cell's per-prompt means: the MDE is the smallest shift of the mean away
from a fixed value (a gate's threshold, a published figure) that the run's
prompts could detect. Next to a comparison of two models or variants, σ is the
SD of the per-prompt *differences*, which already holds the correlation of the
two sides over prompts.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize as _opt
from scipy import stats as _ss

from harness.summary.stats import ALPHA

POWER = 0.8
"""The power at which the minimum detectable difference is stated."""
MIN_PROMPTS = 6
"""Fewest prompts whose sign-flip test can reach a two-sided p below 0.05 (2 / 2**6 = 0.031)."""
MAX_PROMPTS = 1_000_000
"""Where :func:`prompts_needed` stops looking (a difference that small is not worth a run)."""


def min_prompts(alpha: float = ALPHA) -> int:
    """Fewest prompts whose sign-flip test has a two-sided p-value below ``alpha`` at all (2 / 2**n <= alpha)."""
    return max(2, math.ceil(math.log2(2.0 / alpha)))


def power_at(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided test of mean 0 on ``n`` per-prompt values with SD ``sd`` when the true mean is ``delta``."""
    if n < min_prompts(alpha) or not np.isfinite(sd) or not np.isfinite(delta):
        return 0.0 if n < min_prompts(alpha) else float("nan")
    if sd == 0.0:
        return 1.0 if delta != 0.0 else alpha
    df = n - 1
    crit = _ss.t.ppf(1.0 - alpha / 2.0, df)
    ncp = abs(delta) * math.sqrt(n) / sd
    return float(_ss.nct.sf(crit, df, ncp) + _ss.nct.cdf(-crit, df, ncp))


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean (in the metric's unit) detected with probability ``power``; inf below the fewest prompts.

    NaN when ``sd`` is not finite (no spread could be measured: fewer than two
    finite prompt values).
    """
    if n < min_prompts(alpha):
        return float("inf")
    if not np.isfinite(sd):
        return float("nan")
    if sd == 0.0:
        return 0.0
    # Bracket in units of sd/sqrt(n): power is increasing in delta and reaches any target below 1 by ~10 SEs.
    se = sd / math.sqrt(n)
    hi = se
    while power_at(hi, sd, n, alpha) < power:
        hi *= 2.0
    return float(_opt.brentq(lambda d: power_at(d, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * max(se, 1e-300)))


def prompts_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Fewest base prompts whose test detects a true mean ``delta`` with probability ``power``.

    None when ``delta`` is 0 or not finite, ``sd`` is not finite, or more than
    ``MAX_PROMPTS`` would be needed.
    """
    if not np.isfinite(delta) or delta == 0.0 or not np.isfinite(sd):
        return None
    lo = min_prompts(alpha)
    if power_at(delta, sd, lo, alpha) >= power:
        return lo
    hi = lo
    while power_at(delta, sd, hi, alpha) < power:
        if hi >= MAX_PROMPTS:
            return None
        hi = min(hi * 2, MAX_PROMPTS)
    while hi - lo > 1:  # power grows with n: bisect on the integers
        mid = (lo + hi) // 2
        if power_at(delta, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def prompt_sd(per_prompt: np.ndarray) -> float:
    """Sample SD (ddof 1) of per-prompt values, NaN with fewer than two finite values."""
    v = np.asarray(per_prompt, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if v.size >= 2 else float("nan")


def plan_rows(pairs, metric: str = "emb_dist", difference: float | None = None) -> list[dict]:
    """What a run could detect and what a difference would need, from its pairs table (``stabprobe plan``).

    One row per model x variant x rung x length (``kind`` "cell": a shift of that mean from a fixed value) and one
    per pair of models on the same variant x rung x length (``kind`` "comparison": their difference on the pairs
    both were scored on). Each row: the base prompts behind it, the SD of the per-prompt values, the MDE at this
    run's prompt count, and with ``difference`` the base prompts needed to detect it (None: more than
    ``MAX_PROMPTS`` or no spread measured). NaN values of ``metric`` are left out and counted (``n_missing``).
    """
    import itertools

    import pandas as pd

    out: list[dict] = []
    if pairs.empty:
        return out

    def row(kind, model, variant, rung, length, per_prompt: pd.Series, n_missing: int) -> dict:
        sd, n = prompt_sd(per_prompt.to_numpy()), int(per_prompt.size)
        return {"kind": kind, "model": model, "variant": variant, "rung": rung, "length": int(length),
                "n_prompts": n, "n_missing": n_missing, "prompt_sd": sd, "mde": mde(sd, n),
                "difference": difference,
                "prompts_needed": None if difference is None else prompts_needed(difference, sd)}

    for (variant, rung, length), g in pairs.groupby(["variant", "rung", "length"], sort=False):
        by_model = {}
        for model, gm in g.groupby("model", sort=True):
            finite = gm[gm[metric].notna()]
            by_model[model] = finite.set_index("pair_id")
            per_prompt = finite.groupby("prompt_id")[metric].mean()
            out.append(row("cell", model, variant, rung, length, per_prompt, int(len(gm) - len(finite))))
        for a, b in itertools.combinations(sorted(by_model), 2):
            shared = by_model[a].index.intersection(by_model[b].index)
            d = (by_model[a].loc[shared, metric].astype(float) - by_model[b].loc[shared, metric].astype(float))
            per_prompt = d.groupby(by_model[a].loc[shared, "prompt_id"]).mean()
            out.append(row("comparison", f"{a} vs {b}", variant, rung, length, per_prompt, 0))
    return out
