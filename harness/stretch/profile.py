"""Layer profile of a prompt pair: where inside the model the two prompt ends part.

For a pair (A, B) and the prompt-end position of each, ``p_l = ‖h_l(A) −
h_l(B)‖ / ‖h_l(A)‖`` for ``l = 0`` (embeddings) .. ``L`` (after the last
block) and the final norm. Per model × rung the profile is summarised as the
median over base prompts of each prompt's mean profile (pairs of one base
prompt share side A and are not independent), with a percentile bootstrap
CI that resamples base prompts (``scipy.stats.bootstrap``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import stats

from harness.stretch.records import ProfileSummary

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261201


def relative_profile(states_a: np.ndarray, states_b: np.ndarray) -> np.ndarray:
    """[K] ‖a_l − b_l‖ / ‖a_l‖ per layer, from [K, d] prompt-end states; NaN where ‖a_l‖ = 0."""
    a = np.asarray(states_a, dtype=np.float64)
    b = np.asarray(states_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two [K, d] arrays of one shape, got {a.shape} and {b.shape}")
    num = np.linalg.norm(a - b, axis=1)
    den = np.linalg.norm(a, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _ci(values: np.ndarray, seed: int) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])  # every resample has this median
    res = stats.bootstrap((values,), np.median, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                          confidence_level=0.95, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize_profiles(profiles: np.ndarray, prompt_ids: Sequence[str], seed: int = BOOTSTRAP_SEED) -> ProfileSummary:
    """Median profile with prompt-level CIs from [n_pairs, K] profiles and each pair's base prompt id."""
    P = np.asarray(profiles, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != len(prompt_ids):
        raise ValueError("profiles must be [n_pairs, K] with one prompt id per pair")
    K = P.shape[1]
    ids = np.asarray(prompt_ids)
    uniq = sorted(set(ids.tolist()))
    per_prompt = np.full((len(uniq), K), np.nan)
    for i, pid in enumerate(uniq):
        rows = P[ids == pid]
        with warnings.catch_warnings():  # an all-NaN column warns; NaN is the answer we want there
            warnings.simplefilter("ignore", RuntimeWarning)
            per_prompt[i] = np.nanmean(rows, axis=0)
    med, lo, hi, n = (np.full(K, np.nan) for _ in range(4))
    for l in range(K):
        col = per_prompt[:, l]
        col = col[np.isfinite(col)]
        n[l] = col.size
        if col.size:
            med[l] = np.median(col)
            lo[l], hi[l] = _ci(col, seed + l)
    rise = np.diff(med)
    finite = np.isfinite(rise)
    g = int(np.argmax(np.where(finite, rise, -np.inf))) + 1 if finite.any() else -1
    return ProfileSummary(med, lo, hi, n.astype(int), int(P.shape[0]), g, float(rise[g - 1]) if g > 0 else float("nan"))

