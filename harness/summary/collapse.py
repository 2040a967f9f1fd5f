"""The collapse verdict: perturbation distance P and drift D (harness.score.drift) with prompt-level CIs.

Perturbation distance alone cannot tell a robust model from a collapsed one;
drift from the reference is the second axis. Both differences below are
tested with intervals that resample base prompts (harness.summary.stats).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.score.drift import EXCLUDED_FROM_P, reference_of
from harness.summary.stats import cluster_bootstrap_diff_ci

COLLAPSE, NO_COLLAPSE, UNDETERMINED = "collapse", "no collapse", "not determined"


def _base_prompt_of_keys(pairs: pd.DataFrame) -> dict[str, str]:
    """Prompt key -> base prompt id, from the pairs table (side A first: a key is its own base prompt's).

    Drift rows are one per decoded prompt (the base prompt and each edited
    one), so several rows belong to one base prompt; the prompt-level CIs need
    that grouping. A key seen only as side B (an edited prompt) takes its
    pair's base prompt.
    """
    out: dict[str, str] = {}
    if "prompt_key_b" in pairs.columns:
        out.update(zip(pairs["prompt_key_b"].astype(str), pairs["prompt_id"].astype(str)))
    if "prompt_key_a" in pairs.columns:
        out.update(zip(pairs["prompt_key_a"].astype(str), pairs["prompt_id"].astype(str)))
    return out


def _collapse_verdict(dp: tuple[float, float], dmp: tuple[float, float]) -> str:
    """Collapse when P(variant) - P(reference) is below 0 AND D - P above 0, each shown by its 95% prompt-level CI.

    Requiring both intervals is an intersection-union test: each at 5% keeps
    the collapse call at 5% without a correction. "No collapse" when either
    interval lies wholly on the other side; anything else straddles.
    """
    if np.isnan(dp[0]) or np.isnan(dmp[0]):
        return UNDETERMINED
    if dp[1] < 0 and dmp[0] > 0:
        return COLLAPSE
    if dp[0] > 0 or dmp[1] < 0:
        return NO_COLLAPSE
    return UNDETERMINED


def drift_table(pairs: pd.DataFrame, drift: pd.DataFrame, metric: str = "emb_dist") -> list[dict[str, Any]]:
    """Per model x variant x length: perturbation distance P, drift D, their prompt-level CIs and the collapse verdict.

    ``delta_p`` = P(variant) - P(reference) over the pair ids both scored,
    ``d_minus_p`` = D - P(variant), both with 95% CIs that resample base
    prompts. ``collapse`` is "collapse", "no collapse", "not determined"
    (an interval straddles 0, or too few prompts), or None for the reference itself.
    """
    out: list[dict[str, Any]] = []
    if pairs.empty:
        return out
    pert = pairs[~pairs["rung"].isin(EXCLUDED_FROM_P)]
    groups = {k: g for k, g in pert.groupby(["model", "variant", "length"], sort=True)}
    base_of = _base_prompt_of_keys(pairs)
    dgroups = {k: g for k, g in drift.groupby(["model", "variant", "length"], sort=True)} if not drift.empty else {}
    nan2 = (float("nan"), float("nan"))
    present: dict[str, set[str]] = {}  # variants per model: bf16@hf is the reference where bf16 is not spelled
    for model, variant, _ in groups:
        present.setdefault(model, set()).add(variant)
    for (model, variant, length), g in groups.items():
        ref = reference_of(variant, present[model])
        gr, gd = groups.get((model, ref, length)), dgroups.get((model, variant, length))
        p = float(g[metric].mean())
        prompts = g["prompt_id"].astype(str)
        row: dict[str, Any] = {
            "model": model, "variant": variant, "length": int(length), "reference": ref,
            "perturbation_distance": p, "n_pairs": int(len(g)), "n_prompts": int(prompts.nunique()),
            "reference_perturbation_distance": None if gr is None else float(gr[metric].mean()),
            "drift": None if gd is None else float(gd[metric].mean()), "drift_rows": 0 if gd is None else int(len(gd)),
            "drift_prompts": 0, "delta_p": None, "delta_p_ci95": list(nan2), "delta_p_prompts": 0,
            "d_minus_p": None, "d_minus_p_ci95": list(nan2), "d_minus_p_prompts": 0, "collapse": None,
        }
        if gd is not None:
            dprompts = gd["prompt_key_a"].astype(str).map(lambda k: base_of.get(k, k)) if "prompt_key_a" in gd.columns \
                else gd["prompt_id"].astype(str)
            row["drift_prompts"] = int(dprompts.nunique())
        if variant != ref:
            dp = dmp = nan2
            if gr is not None:
                mine = g.set_index(g["pair_id"].astype(str))
                theirs = gr.set_index(gr["pair_id"].astype(str))
                shared = mine.index.intersection(theirs.index)
                row["delta_p"] = float((mine.loc[shared, metric] - theirs.loc[shared, metric]).mean()) if len(shared) else None
                lo, hi, n = cluster_bootstrap_diff_ci(theirs.loc[shared, metric], theirs.loc[shared, "prompt_id"],
                                                      mine.loc[shared, metric], mine.loc[shared, "prompt_id"])
                dp, row["delta_p_ci95"], row["delta_p_prompts"] = (lo, hi), [lo, hi], n
            if gd is not None:
                row["d_minus_p"] = row["drift"] - p
                lo, hi, n = cluster_bootstrap_diff_ci(g[metric], prompts, gd[metric], dprompts)
                dmp, row["d_minus_p_ci95"], row["d_minus_p_prompts"] = (lo, hi), [lo, hi], n
            row["collapse"] = _collapse_verdict(dp, dmp)
        out.append(row)
    return out


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:+.3f}, {hi:+.3f}]"


def collapse_flags(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At the longest length: ``collapse`` for a shown collapse, ``collapse_not_determined`` when the point
    estimates match the pattern but an interval straddles 0 (said, not silently dropped); "no collapse" raises nothing.
    """
    flags = []
    longest = max((r["length"] for r in table), default=None)
    for r in table:
        if r["length"] != longest or r["collapse"] not in (COLLAPSE, UNDETERMINED):
            continue
        pattern = r["delta_p"] is not None and r["d_minus_p"] is not None and r["delta_p"] < 0 and r["d_minus_p"] > 0
        if r["collapse"] == UNDETERMINED and not pattern:
            continue
        what = ("collapse: less responsive, not more stable" if r["collapse"] == COLLAPSE else
                "not determined: the point estimates match the collapse pattern but a 95% interval straddles 0")
        flags.append({
            "flag": "collapse" if r["collapse"] == COLLAPSE else "collapse_not_determined",
            "model": r["model"], "variant": r["variant"],
            "detail": (f"{what}; P {r['perturbation_distance']:.3f} vs {r['reference']}'s "
                       f"{r['reference_perturbation_distance']:.3f}: P - P(ref) {r['delta_p']:+.3f} {_ci(*r['delta_p_ci95'])} "
                       f"over {r['delta_p_prompts']} prompts; drift D {r['drift']:.3f}: D - P {r['d_minus_p']:+.3f} "
                       f"{_ci(*r['d_minus_p_ci95'])} over {r['d_minus_p_prompts']} prompts "
                       f"(collapse needs P - P(ref) < 0 and D - P > 0, both 95% CIs clear of 0)"),
            "values": {k: r[k] for k in ("length", "collapse", "perturbation_distance", "reference_perturbation_distance",
                                         "drift", "delta_p", "delta_p_ci95", "d_minus_p", "d_minus_p_ci95", "n_prompts")},
        })
    return flags
