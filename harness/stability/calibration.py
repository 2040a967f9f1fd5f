"""Calibration of the predicted KL boundary t* against the empirical one.

Isotonic regression of log t_emp on log t* (scipy.optimize.isotonic_regression),
evaluated by 5-fold cross-validation grouped by position: all directions of a
position are held out together, so a fold never sees the position it is
scored on. Score: share of held-out predictions with |t_pred/t_emp - 1| ≤ 0.5.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

from harness.stability.directions import stable_seed
from harness.stability.records import CalibrationScore, IsotonicFit


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> IsotonicFit:
    """Nondecreasing least-squares fit of y on x; tied x are pooled first (weighted by count)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no points to fit")
    ux, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    ymean = np.bincount(inv, weights=y) / counts
    fitted = isotonic_regression(ymean, weights=counts.astype(np.float64), increasing=True).x
    return IsotonicFit(ux, np.asarray(fitted, dtype=np.float64))


def grouped_folds(groups: Sequence[object], n_folds: int = 5, key: str = "stabprobe-calibration") -> np.ndarray:
    """Fold index per row; every row of a group shares a fold. Deterministic from ``key``."""
    g = np.asarray([str(x) for x in groups])
    uniq = np.unique(g)
    rng = np.random.default_rng(stable_seed(key, "folds", n_folds))
    order = rng.permutation(uniq.size)
    fold_of = np.empty(uniq.size, dtype=np.int64)
    fold_of[order] = np.arange(uniq.size) % n_folds
    return fold_of[np.searchsorted(uniq, g)]


def within_share(t_pred: np.ndarray, t_emp: np.ndarray, tol: float = 0.5) -> float:
    t_pred = np.asarray(t_pred, dtype=np.float64)
    t_emp = np.asarray(t_emp, dtype=np.float64)
    if t_emp.size == 0:
        return math.nan
    return float(np.mean(np.abs(t_pred / t_emp - 1.0) <= tol))


def cross_validated_log_predictions(log_ts: np.ndarray, log_te: np.ndarray, groups: Sequence[object],
                                    n_folds: int = 5, key: str = "stabprobe-calibration") -> np.ndarray:
    """Held-out isotonic predictions of log t_emp (NaN where a fold had no training data)."""
    folds = grouped_folds(groups, n_folds, key)
    pred = np.full(log_ts.shape, np.nan)
    for f in range(n_folds):
        test = folds == f
        train = ~test
        if not test.any() or not train.any():
            continue
        pred[test] = isotonic_fit(log_ts[train], log_te[train]).predict(log_ts[test])
    return pred


def calibration_score(t_star: np.ndarray, t_emp: np.ndarray, groups: Sequence[object], n_folds: int = 5,
                      key: str = "stabprobe-calibration", tol: float = 0.5) -> CalibrationScore:
    ts = np.asarray(t_star, dtype=np.float64)
    te = np.asarray(t_emp, dtype=np.float64)
    g = np.asarray([str(x) for x in groups])
    ok = np.isfinite(ts) & np.isfinite(te) & (ts > 0) & (te > 0)
    ts, te, g = ts[ok], te[ok], g[ok]
    n_pos = int(np.unique(g).size)
    if ts.size == 0 or n_pos < 2:
        return CalibrationScore(int(ts.size), n_pos, within_share(ts, te, tol), math.nan, int((~ok).sum()))
    pred = cross_validated_log_predictions(np.log(ts), np.log(te), g, min(n_folds, n_pos), key)
    have = np.isfinite(pred)
    return CalibrationScore(int(ts.size), n_pos, within_share(ts, te, tol),
                            within_share(np.exp(pred[have]), te[have], tol), int((~ok).sum()))


def calibrate(t_star: np.ndarray, t_emp: np.ndarray, groups: Sequence[object], classes: Sequence[str],
              n_folds: int = 5, key: str = "stabprobe-calibration") -> dict[str, CalibrationScore]:
    """Pooled (one isotonic fit over every class) and per class (one fit per class)."""
    cls = np.asarray(classes)
    g = np.asarray([str(x) for x in groups])
    out = {"pooled": calibration_score(t_star, t_emp, g, n_folds, key)}
    for c in dict.fromkeys(cls.tolist()):
        m = cls == c
        out[c] = calibration_score(np.asarray(t_star)[m], np.asarray(t_emp)[m], g[m], n_folds, f"{key}/{c}")
    return out


def per_position_spearman(t_star: np.ndarray, t_emp: np.ndarray, groups: Sequence[object], min_directions: int = 5) -> np.ndarray:
    """Spearman of t* vs t_emp across the directions of each position (finite pairs only).

    Pearson correlation of average ranks (ties share their mean rank, as
    scipy.stats.spearmanr), computed for every position at once from grouped
    sums. Positions with fewer than ``min_directions`` pairs or a constant side are skipped.
    """
    ts = np.asarray(t_star, dtype=np.float64)
    te = np.asarray(t_emp, dtype=np.float64)
    g = np.asarray([str(x) for x in groups])
    ok = np.isfinite(ts) & np.isfinite(te)
    if not ok.any():
        return np.zeros(0)
    df = pd.DataFrame({"g": g[ok], "a": ts[ok], "b": te[ok]})
    grp = df.groupby("g", sort=True)
    df["ra"] = grp["a"].rank(method="average")
    df["rb"] = grp["b"].rank(method="average")
    df["ra2"], df["rb2"], df["rab"] = df["ra"] ** 2, df["rb"] ** 2, df["ra"] * df["rb"]
    sums = df.groupby("g", sort=True)[["ra", "rb", "ra2", "rb2", "rab"]].sum()
    n = df.groupby("g", sort=True).size().to_numpy(dtype=np.float64)
    sa, sb = sums["ra"].to_numpy(), sums["rb"].to_numpy()
    var_a = sums["ra2"].to_numpy() - sa * sa / n
    var_b = sums["rb2"].to_numpy() - sb * sb / n
    cov = sums["rab"].to_numpy() - sa * sb / n
    # ranks are small integers or halves: these sums are exact in float64
    keep = (n >= min_directions) & (var_a > 0) & (var_b > 0)
    return cov[keep] / np.sqrt(var_a[keep] * var_b[keep])
