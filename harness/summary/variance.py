"""Where the variance comes from: the per-pair distance and answer correctness split into base prompt, rung, model,
variant, engine and residual, with the identical rung's floor as the noise share (summary.json ``variance``).

The model is additive with crossed random effects, y = mu + prompt + rung + model + variant + engine + e, fitted
per length over the pairs of the rungs that perturb without changing the task (harness.ladder.records: the noise
floor, the positive control and the task-changing rungs are left out; the identical rung gives the noise floor).

Estimator: Henderson's method III (fitting constants), a method-of-moments estimator for unbalanced crossed
designs. For each factor f, R(f | others) = RSS(without f) - RSS(full) has expectation df_f sigma_e^2 + k_f sigma_f^2
with k_f = ||M_(without f) Z_f||_F^2 whatever the other factors' variances, so sigma_f^2 = (R - df_f sigma_e^2) / k_f.
Why not statsmodels' MixedLM (REML, crossed via one group and ``vc_formula``): it gives the same numbers on
balanced data (tests/summary/test_variance.py checks it), but one fit of the task ladder's 7,034 pairs took 225 s
(converged, on the boundary) while the intervals need a thousand refits; the moment estimator is closed-form least
squares from per-prompt sufficient statistics (milliseconds), never fails to converge, and is unbiased without
normality. A negative estimate is shown as 0 and said.

Intervals resample base prompts (the statistical unit: a prompt keeps all its pairs; a prompt drawn twice is two
levels), percentile at the level expanded for the number of prompts as every prompt-level interval of the run,
``scipy.stats.bootstrap``. They are conditional on the rungs, models and variants of the run:
they say how the numbers would move with other prompts, not with other models. A factor with one level is left out
and said (not given 0); a factor whose levels another factor determines (each variant runs on one engine) is left
out, its variation counted in that factor, and said.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _ss

from harness.ladder.records import NOISE_FLOOR, rung_info
from harness.models.variants import base_name
from harness.summary.records import VarianceFit
from harness.summary.stats import CONFIDENCE, expanded_level

VARIANCE_VERSION = 2
VARIANCE_RESAMPLES = 1000
"""Bootstrap resamples of the base prompts (half the cell means' 2,000: each resample refits the model)."""
VARIANCE_SEED = 20261205
FACTORS = ("prompt", "rung", "model", "variant", "engine")
"""The crossed factors, in the order the report lists them; the residual and the noise floor follow."""
OUTCOMES = {"emb_dist": "distance", "correct_b": "correctness"}
"""Decomposed column -> what it is: the run's primary distance, and whether side b's answer is right (0/1)."""
MIN_PROMPTS = 5


def decomposed_rungs() -> set[str]:
    """Rungs whose pairs are decomposed: small edits that keep the task (no control, no task change)."""
    from harness.ladder.records import RUNGS

    return {r for r in RUNGS if rung_info(r).is_perturbation and not rung_info(r).changes_task}


def _engine(variant: str) -> str:
    from harness.models.variants import engine_of

    try:
        return engine_of(variant)
    except Exception:  # noqa: BLE001 - a variant name this version cannot parse (a hand-made table): its suffix
        return variant.split("@", 1)[1] if "@" in variant else "hf"


def factor_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    """The factor columns of every pair: prompt, rung, model, variant (without its engine) and engine."""
    variants = pairs["variant"].astype(str)
    return pd.DataFrame({"prompt": pairs["prompt_id"].astype(str).to_numpy(), "rung": pairs["rung"].astype(str).to_numpy(),
                         "model": pairs["model"].astype(str).to_numpy(),
                         "variant": variants.map(base_name).to_numpy(), "engine": variants.map(_engine).to_numpy()})


# --- the estimator ------------------------------------------------------------------------------------------------


def _pinv_quad(g: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, int]:
    """(left' pinv(g) right, rank of g) for a symmetric positive semi-definite g (a cross-product of dummies)."""
    if g.shape[0] == 0:
        return np.zeros((left.shape[1], right.shape[1])), 0
    w, v = np.linalg.eigh(g)
    keep = w > max(w.max(initial=0.0), 1.0) * 1e-10
    vl, vr = v[:, keep].T @ left, v[:, keep].T @ right
    return vl.T @ (vr / w[keep, None]), int(keep.sum())


class _Design:
    """Per-prompt sufficient statistics of one decomposition: every fit, resampled or not, is a weighted sum of them.

    Columns: the intercept, every factor's dummies (all levels: a rank-deficient block is handled by the
    pseudo-inverse), y last. Per prompt p: C_p = W_p' W_p, s_p = 1' W_p and n_p. A resample that draws prompt p
    w_p times has cross-product sum_p w_p C_p, and absorbing the prompt (each draw its own level) subtracts
    sum_p w_p s_p s_p' / n_p: no row is ever copied.
    """

    def __init__(self, y: np.ndarray, codes: dict[str, np.ndarray]):
        pc = codes["prompt"]
        self.factors = [f for f in codes if f != "prompt"]
        blocks, self.cols, at = [np.ones((y.size, 1))], {}, 1
        for f in self.factors:
            d = np.zeros((y.size, int(codes[f].max()) + 1))
            d[np.arange(y.size), codes[f]] = 1.0
            blocks.append(d)
            self.cols[f] = np.arange(at, at + d.shape[1])
            at += d.shape[1]
        w = np.hstack([*blocks, y[:, None]])
        self.y = at
        n_p = int(pc.max()) + 1
        order = np.argsort(pc, kind="stable")
        bounds = np.searchsorted(pc[order], np.arange(n_p + 1))
        self.c = np.stack([w[order[bounds[k]:bounds[k + 1]]].T @ w[order[bounds[k]:bounds[k + 1]]] for k in range(n_p)])
        self.s = np.stack([w[order[bounds[k]:bounds[k + 1]]].sum(axis=0) for k in range(n_p)])
        self.n = np.diff(bounds).astype(float)

    def fit(self, weights: np.ndarray) -> VarianceFit:
        """Method III at these prompt weights (ones: the data as they are)."""
        live = weights > 0
        wt, s, nn = weights[live], self.s[live], self.n[live]
        raw = np.tensordot(wt, self.c[live], axes=1)  # W'W
        between = (s * (wt / nn)[:, None]).T @ s  # sum_p w_p s_p s_p' / n_p
        within = raw - between  # the cross-products after absorbing the prompt
        n, n_levels, yi = float(wt @ nn), float(wt.sum()), self.y

        def rss_within(cols: np.ndarray) -> tuple[float, int]:
            q, r = _pinv_quad(within[np.ix_(cols, cols)], within[cols, yi:yi + 1], within[cols, yi:yi + 1])
            return float(within[yi, yi] - q[0, 0]), r

        every = np.concatenate([self.cols[f] for f in self.factors]) if self.factors else np.zeros(0, np.intp)
        rss, rank = rss_within(every)
        rank += int(n_levels)
        df_e = n - rank
        sigma_e = rss / df_e if df_e > 0 else float("nan")
        comps: dict[str, float] = {}
        dfs: dict[str, int] = {}
        for f in self.factors:
            rest = np.concatenate([self.cols[g] for g in self.factors if g != f] or [np.zeros(0, np.intp)])
            rss_f, rank_f = rss_within(rest)
            zf = self.cols[f]
            q, _ = _pinv_quad(within[np.ix_(rest, rest)], within[np.ix_(rest, zf)], within[np.ix_(rest, zf)])
            k = float(np.trace(within[np.ix_(zf, zf)]) - np.trace(q))
            dfs[f] = rank - (rank_f + int(n_levels))
            comps[f] = (rss_f - rss - dfs[f] * sigma_e) / k if k > 1e-9 else float("nan")
        # The prompt: the model without it is the intercept plus every other dummy, not absorbed.
        x = np.concatenate([[0], every]).astype(np.intp)
        q, rank_x = _pinv_quad(raw[np.ix_(x, x)], raw[x, yi:yi + 1], raw[x, yi:yi + 1])
        rss_p = float(raw[yi, yi] - q[0, 0])
        t = (s[:, x] * wt[:, None]).T @ s[:, x]  # Z_prompt' X, squared: sum_p w_p s_p s_p'
        k_p = n - float(np.trace(_pinv_quad(raw[np.ix_(x, x)], t, np.eye(x.size))[0]))
        dfs["prompt"] = rank - rank_x
        comps["prompt"] = (rss_p - rss - dfs["prompt"] * sigma_e) / k_p if k_p > 1e-9 else float("nan")
        return VarianceFit(components={"prompt": comps["prompt"], **{f: comps[f] for f in self.factors}},
                           residual=sigma_e, df=dfs, df_residual=int(round(df_e)), n=int(round(n)))


def henderson3(y: np.ndarray, codes: dict[str, np.ndarray]) -> VarianceFit:
    """Method-III variance components of the factors in ``codes`` (integer codes 0..L-1, "prompt" among them).

    Every factor must have two levels or more and be separable (the caller checks, :func:`separable`); the
    estimates are not truncated at 0 here.
    """
    design = _Design(np.asarray(y, dtype=float), codes)
    return design.fit(np.ones(design.n.size))


def separable(factors: pd.DataFrame, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The factors to fit, and why each other one is left out (one level; determined by another factor)."""
    notes: dict[str, str] = {}
    keep: list[str] = []
    for f in names:
        levels = factors[f].nunique()
        if levels < 2:
            notes[f] = f"one level ({factors[f].iloc[0] if len(factors) else '-'}): left out, not 0"
        else:
            keep.append(f)
    # A factor whose level is a function of another kept factor's adds no column: its variation is in that one.
    for f in ("engine", "variant", "model", "rung"):
        if f not in keep:
            continue
        for g in keep:
            if g != f and g != "prompt" and (factors.groupby(g)[f].nunique() <= 1).all():
                notes[f] = f"determined by {g} (each {g} has one {f}): left out, its variation counted in {g}"
                keep.remove(f)
                break
    return keep, notes


def _codes(factors: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    return {f: pd.factorize(factors[f], sort=True)[0].astype(np.intp) for f in names}


def decompose(y: np.ndarray, factors: pd.DataFrame, floor_y: np.ndarray | None = None,
              floor_prompts: np.ndarray | None = None, resamples: int = VARIANCE_RESAMPLES,
              seed: int = VARIANCE_SEED) -> dict[str, Any]:
    """Components, shares and prompt-resampled intervals of ``y`` over ``factors`` (one row per pair).

    ``floor_y``: per identical pair, the noise statistic whose mean is the noise variance (see :func:`_floor_stat`),
    with ``floor_prompts`` its base prompts, resampled with the same draws.
    """
    names, notes = separable(factors, list(FACTORS))
    out: dict[str, Any] = {"n_pairs": int(y.size), "n_prompts": int(factors["prompt"].nunique()),
                           "levels": {f: int(factors[f].nunique()) for f in FACTORS}, "left_out": notes}
    if "prompt" not in names or factors["prompt"].nunique() < MIN_PROMPTS:
        out["not_computed"] = f"fewer than {MIN_PROMPTS} base prompts"
        return out
    codes = _codes(factors, names)
    design = _Design(np.asarray(y, dtype=float), codes)
    keys = [*names, "residual"]

    def values(fit: VarianceFit) -> np.ndarray:
        return np.array([fit.components[f] for f in names] + [fit.residual])

    est = values(design.fit(np.ones(design.n.size)))
    prompt_ids = np.unique(factors["prompt"].to_numpy())  # the order of codes["prompt"] (sorted)
    f_sum, f_n = np.zeros(prompt_ids.size), np.zeros(prompt_ids.size)
    if floor_y is not None and floor_y.size:
        at = np.searchsorted(prompt_ids, floor_prompts)
        inside = (at < prompt_ids.size) & (prompt_ids[np.minimum(at, prompt_ids.size - 1)] == floor_prompts)
        np.add.at(f_sum, at[inside], floor_y[inside])
        np.add.at(f_n, at[inside], 1.0)
    noise = float(f_sum.sum() / f_n.sum()) if f_n.sum() else float("nan")

    def statistic(idx: np.ndarray) -> np.ndarray:
        w = np.bincount(idx.astype(np.intp), minlength=prompt_ids.size).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            comps = np.nan_to_num(np.clip(values(design.fit(w)), 0.0, None))  # a level no draw has: no variance
            nz = float(w @ f_sum / (w @ f_n)) if w @ f_n else float("nan")
        total = comps.sum()
        return np.concatenate([comps, [nz], comps / total if total > 0 else np.full(comps.size, np.nan),
                               [nz / total if total > 0 else np.nan]])

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # scipy warns when a statistic is constant over the resamples (a noise floor of exact zeros, a factor whose
        # estimate is 0 in every draw): those intervals are said in the table, not a library warning.
        warnings.simplefilter("ignore", _ss.DegenerateDataWarning)
        # The level is expanded for the number of prompts as every prompt-level interval of the run
        # (harness.summary.stats.expanded_level): the plain percentile interval is too narrow at few prompts.
        res = _ss.bootstrap((np.arange(prompt_ids.size),), statistic, n_resamples=resamples, vectorized=False,
                            method="percentile", confidence_level=expanded_level(CONFIDENCE, prompt_ids.size),
                            rng=np.random.default_rng(seed))
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    comps = np.clip(est, 0.0, None)
    total = float(comps.sum())
    m = len(keys)
    rows = []
    for i, f in enumerate(keys):
        rows.append({"factor": f, "variance": float(comps[i]), "estimate": float(est[i]),
                     "ci95": [float(lo[i]), float(hi[i])], "share": float(comps[i] / total) if total > 0 else float("nan"),
                     "share_ci95": [float(lo[m + 1 + i]), float(hi[m + 1 + i])],
                     "truncated": bool(est[i] < 0)})
    noise_ci = [float(lo[m]), float(hi[m])]
    noise_share_ci = [float(lo[2 * m + 1]), float(hi[2 * m + 1])]
    if f_n.sum() and not np.any(f_sum):
        # Every identical pair the same: no resample can move it, and a [0, 0] interval would claim a certainty
        # the prompts have not shown (as harness.summary.stats.cluster_bootstrap_ci for constant values).
        noise_ci = noise_share_ci = [float("nan"), float("nan")]
    out.update({"total": total, "components": rows,
                "noise": {"variance": noise, "share": noise / total if total > 0 else float("nan"),
                          "ci95": noise_ci, "share_ci95": noise_share_ci,
                          "n_pairs": int(f_n.sum())}})
    return out


# --- summary.json ---------------------------------------------------------------------------------------------------


def _floor_stat(floor: pd.DataFrame, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    """Per identical pair: a value whose mean is the noise variance, with its base prompt."""
    if outcome == "correct_b":
        f = floor.dropna(subset=["correct_a", "correct_b"])
        d = f["correct_a"].astype(float).to_numpy() - f["correct_b"].astype(float).to_numpy()
        return d * d / 2.0, f["prompt_id"].astype(str).to_numpy()
    f = floor.dropna(subset=[outcome])
    if f.empty:
        return np.zeros(0), np.zeros(0, dtype=str)
    cells = f.groupby(["model", "variant"])[outcome]
    dev = (f[outcome] - cells.transform("mean")).to_numpy(dtype=float)
    # Pooled within-cell variance as a mean over pairs: each squared deviation scaled by n / (n - cells).
    dof = len(f) - cells.ngroups
    scale = len(f) / dof if dof > 0 else float("nan")
    return dev * dev * scale, f["prompt_id"].astype(str).to_numpy()


def variance_table(pairs: pd.DataFrame, resamples: int = VARIANCE_RESAMPLES) -> list[dict[str, Any]]:
    """summary.json ``variance``: one row per outcome x length (see the module docstring)."""
    if pairs.empty:
        return []
    keep = decomposed_rungs()
    out = []
    for length, g in pairs.groupby("length", sort=True):
        floor = g[g["rung"].astype(str) == NOISE_FLOOR]
        body = g[g["rung"].astype(str).isin(keep)]
        for col, what in OUTCOMES.items():
            if col not in body.columns:
                continue
            rows = body.dropna(subset=[col])
            row: dict[str, Any] = {"outcome": col, "what": what, "length": int(length),
                                   "rungs": sorted({str(r) for r in rows["rung"]}, key=lambda r: rung_info(r).order),
                                   "n_missing": int(len(body) - len(rows))}
            if rows.empty:
                row.update({"n_pairs": 0, "n_prompts": 0, "not_computed": f"no pair with a finite {col}"})
                out.append(row)
                continue
            fy, fp = _floor_stat(floor, col)
            row.update(decompose(rows[col].astype(float).to_numpy(), factor_frame(rows), fy, fp, resamples=resamples))
            out.append(row)
    return out
