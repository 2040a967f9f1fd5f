"""Does the ranking survive? Per rung, whether the order of the compared units (models, or model x variants) on
the original prompts is the order on the perturbed ones (summary.json ``ranking``; ``compare --models``).

Two rankings per rung, both over the pair ids every unit scored (finite values), each base prompt weighted once
(mean over prompts of each prompt's mean over its pairs, as in ``compare``):

- **accuracy**: *original* = accuracy on side a of the rung's pairs (the base prompts as written), *perturbed* =
  accuracy on side b (the edited prompts). Pairs whose side b answer is unknown are left out (and so are the
  task-changing rungs: their side b asks another question).
- **distance** (lower = more stable): a distance needs two prompts, so there is no distance "on the originals".
  The reference is the ranking by mean embedding distance over the *other* perturbation rungs pooled (the run's
  overall stability ranking without this rung); *perturbed* is the ranking by this rung's mean distance. It says
  whether "the more stable model" read off the rest of the ladder holds for this kind of edit.

Uncertainty: the base prompts are resampled (``RANKING_RESAMPLES`` draws, fixed seed; a prompt keeps all its pairs,
on the rung and in the reference alike). For every two units, ``p_same`` is the share of resamples whose
original and perturbed orders agree (a tie agrees only with a tie); for all units, Kendall's tau-b
(``scipy.stats.kendalltau``) between the original and perturbed scores, with the percentile interval of its
resampled values (a resample where a side is all ties has no tau: counted in ``tau_undefined``, never 0). With
two units tau is +1 or -1, so its mean is 2 p_same - 1. The verdict per two units: ``holds`` when p_same >=
0.95, ``flips`` when the order is reversed (strictly) in 95% of the resamples or more, else ``uncertain`` (two
units that do not differ give ~0.5; a resample where exactly one side ties counts as neither: ``p_one_tied``).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _ss

from harness.ladder.records import rung_info
from harness.summary.variance import decomposed_rungs

RANKING_VERSION = 1
RANKING_RESAMPLES = 1000
RANKING_SEED = 20261206
HOLDS = 0.95
"""p_same at or above: the order holds; p_reversed at or above: it flips; else uncertain."""
MIN_PROMPTS = 5
MEASURES = ("accuracy", "distance")
DISTANCE = "emb_dist"


def _shared(rows: pd.DataFrame, units: list[str], unit_col: str, needed: Sequence[str]) -> pd.DataFrame:
    """The rows of the pair ids every unit scored with every ``needed`` column finite."""
    ok = rows.dropna(subset=list(needed))
    per_pair = ok.groupby("pair_id")[unit_col].nunique()
    keep = per_pair.index[per_pair == len(units)]
    return ok[ok["pair_id"].isin(keep)]


def _per_prompt(rows: pd.DataFrame, col: str, prompts: np.ndarray, units: list[str], unit_col: str) -> np.ndarray:
    """(prompts x units) mean of ``col`` per base prompt; NaN where a prompt has no pair."""
    table = rows.groupby(["prompt_id", unit_col])[col].mean().unstack(unit_col)
    return table.reindex(index=prompts, columns=units).to_numpy(dtype=float)


def _scores(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(draws x units) prompt-weighted means of a (prompts x units) table at prompt weights w (draws x prompts)."""
    have = ~np.isnan(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(have, m, 0.0)) / (w @ have.astype(float))


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    if np.isnan(a).any() or np.isnan(b).any() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a side all tied: no order to correlate
    return float(_ss.kendalltau(a, b).statistic)


def _tau_b(s_o: np.ndarray, s_p: np.ndarray) -> np.ndarray:
    """Kendall's tau-b per resample from the signs of every two units' differences ((unit pairs x draws) each).

    tau-b = sum(s_o s_p) / sqrt(#untied in o * #untied in p): scipy.stats.kendalltau's statistic (a test checks
    they agree), vectorized over the draws; NaN when a side is all ties or has a NaN.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.sum(s_o * s_p, axis=0)
        den = np.sqrt(np.sum(np.abs(s_o), axis=0) * np.sum(np.abs(s_p), axis=0))
        return np.where(den > 0, num / den, np.nan)


def _order(scores: dict[str, float], lower_first: bool) -> list[str]:
    return sorted(scores, key=lambda u: (scores[u] if lower_first else -scores[u], u))


def rank_rung(orig: np.ndarray, pert: np.ndarray, units: list[str], measure: str, draws: np.ndarray) -> dict[str, Any]:
    """Orders, p_same per two units and Kendall's tau with its interval, from (prompts x units) tables."""
    ones = np.ones((1, orig.shape[0]))
    o, p = _scores(orig, ones)[0], _scores(pert, ones)[0]
    bo, bp = _scores(orig, draws), _scores(pert, draws)
    lower_first = measure == "distance"
    pairs, s_o, s_p = [], [], []
    for i, j in itertools.combinations(range(len(units)), 2):
        so, sp = np.sign(bo[:, i] - bo[:, j]), np.sign(bp[:, i] - bp[:, j])
        s_o.append(so)
        s_p.append(sp)
        ok = ~(np.isnan(so) | np.isnan(sp))
        same, rev = (so[ok] == sp[ok]), (so[ok] * sp[ok] < 0)
        p_same = float(same.mean()) if ok.any() else float("nan")
        p_rev = float(rev.mean()) if ok.any() else float("nan")
        verdict = ("holds" if p_same >= HOLDS else "flips" if p_rev >= HOLDS else "uncertain") if ok.any() else "-"
        pairs.append({"a": units[i], "b": units[j], "original_diff": float(o[i] - o[j]),
                      "perturbed_diff": float(p[i] - p[j]), "same_order": bool(np.sign(o[i] - o[j]) == np.sign(p[i] - p[j])),
                      "p_same": p_same, "p_reversed": p_rev, "p_one_tied": float(1.0 - p_same - p_rev) if ok.any() else float("nan"),
                      "resamples": int(ok.sum()), "verdict": verdict})
    taus = _tau_b(np.array(s_o), np.array(s_p))
    fin = taus[~np.isnan(taus)]
    return {"original": dict(zip(units, map(float, o))), "perturbed": dict(zip(units, map(float, p))),
            "original_order": _order(dict(zip(units, map(float, o))), lower_first),
            "perturbed_order": _order(dict(zip(units, map(float, p))), lower_first),
            "tau": _tau(o, p), "tau_ci95": ([float(np.percentile(fin, 2.5)), float(np.percentile(fin, 97.5))]
                                            if fin.size else [float("nan"), float("nan")]),
            "tau_mean": float(fin.mean()) if fin.size else float("nan"),
            "tau_undefined": float(1.0 - fin.size / taus.size), "pairs": pairs}


def ranking_stability(pairs: pd.DataFrame, unit_col: str = "unit", group_cols: Sequence[str] = ("length",),
                      resamples: int = RANKING_RESAMPLES, seed: int = RANKING_SEED) -> list[dict[str, Any]]:
    """One row per group x rung x measure over the units of ``unit_col`` (two or more; see the module docstring)."""
    out: list[dict[str, Any]] = []
    if pairs.empty or unit_col not in pairs.columns:
        return out
    keep = decomposed_rungs()
    for key, g in pairs.groupby(list(group_cols), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        head = {c: (int(v) if c == "length" else str(v)) for c, v in zip(group_cols, key)}
        units = sorted(g[unit_col].astype(str).unique())
        if len(units) < 2:
            continue
        g = g[g["rung"].astype(str).isin(keep)].assign(**{unit_col: g[unit_col].astype(str),
                                                         "prompt_id": g["prompt_id"].astype(str)})
        prompts = np.array(sorted(g["prompt_id"].unique()))
        rng = np.random.default_rng(seed)
        draws = np.stack([np.bincount(rng.integers(0, prompts.size, prompts.size), minlength=prompts.size)
                          for _ in range(resamples)]).astype(float) if prompts.size else np.zeros((0, 0))
        dist_rows = _shared(g, units, unit_col, [DISTANCE]) if DISTANCE in g.columns else g.iloc[0:0]
        for rung in sorted(g["rung"].unique(), key=lambda r: rung_info(r).order):
            for measure in MEASURES:
                if measure == "accuracy":
                    if not {"correct_a", "correct_b"} <= set(g.columns):
                        continue
                    rows = _shared(g[g["rung"] == rung], units, unit_col, ["correct_a", "correct_b"])
                    orig = _per_prompt(rows, "correct_a", prompts, units, unit_col)
                    pert = _per_prompt(rows, "correct_b", prompts, units, unit_col)
                    reference = "accuracy on side a of this rung's pairs (the original prompts)"
                else:
                    rows = dist_rows[dist_rows["rung"] == rung]
                    others = dist_rows[dist_rows["rung"] != rung]
                    orig = _per_prompt(others, DISTANCE, prompts, units, unit_col)
                    pert = _per_prompt(rows, DISTANCE, prompts, units, unit_col)
                    reference = "mean distance over the other perturbation rungs pooled"
                n_prompts = int(rows["prompt_id"].nunique())
                row: dict[str, Any] = {**head, "rung": str(rung), "measure": measure, "units": units,
                                       "reference": reference, "n_prompts": n_prompts,
                                       "n_pairs": int(len(rows) // len(units))}
                if n_prompts < MIN_PROMPTS:
                    row["not_computed"] = f"{n_prompts} base prompts with a value for every unit (< {MIN_PROMPTS})"
                else:
                    row.update(rank_rung(orig, pert, units, measure, draws))
                out.append(row)
    return out


def ranking_table(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """summary.json ``ranking``: the run's model x variants (two or more) ranked per length x rung; [] with one."""
    if pairs.empty:
        return []
    units = pairs["model"].astype(str) + "/" + pairs["variant"].astype(str)
    if units.nunique() < 2:
        return []
    return ranking_stability(pairs.assign(unit=units), "unit", ("length",))
