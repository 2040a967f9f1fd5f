"""Measurement-trap flags: where a low number would mean "the probe was fooled", not "stable".

- scaffold: the model opens most outputs with the same preamble, or its raw
  short-output divergence is under half its answer-span divergence at the
  longest length (the preamble, not the answer, is being measured);
- confident_but_unstable: near-certain prompt-end prediction, yet long-output
  divergence above the panel median (prompt-end confidence says nothing
  about the trajectory);
- collapse: a variant moves less under perturbation than the reference but
  drifts from it more than it moves (added with the variant work);
- nondeterministic: the identical rung is not exactly 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import CONTROL_RUNGS, NOISE_FLOOR
from harness.summary.traps import common_preamble_share

SCAFFOLD_SHARE = 0.8
CONFIDENT_TOP1 = 0.999
CONFIDENT_JS = 1e-6


def scaffold_table(gens: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per model x variant: share of outputs with a scaffold, unclosed share, most common opening share."""
    if gens is None or gens.empty or "scaffold_status" not in gens.columns:
        return []
    out = []
    first = gens[gens["replicate"] == 0]
    for (model, variant), g in first.groupby(["model", "variant"], sort=True):
        status = g["scaffold_status"]
        # Only a preamble of real content counts: a degenerate model that opens every
        # output with the same run of newlines has no scaffold (harness.summary.traps).
        common = common_preamble_share(g)
        out.append({
            "model": model, "variant": variant, "outputs": int(len(g)),
            "scaffold_share": float(status.isin(["closed", "unclosed"]).mean()),
            "unclosed_share": float((status == "unclosed").mean()),
            "common_opening_share": float(common),
        })
    return out


def _perturbed(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs[pairs["rung"] != NOISE_FLOOR]


def compute_flags(pairs: pd.DataFrame, scaffold: list[dict[str, Any]], determinism: dict[str, Any]) -> list[dict[str, Any]]:
    """Each flag: {"flag", "model", "variant", "detail", "values"}; only flags that fired.

    ``scaffold`` is :func:`scaffold_table`'s, ``determinism`` the verdict of harness.summary.determinism.
    """
    flags: list[dict[str, Any]] = []
    if pairs.empty:
        return flags
    lengths = sorted(pairs["length"].unique())
    short, long = int(lengths[0]), int(lengths[-1])
    pert = _perturbed(pairs)
    scaffolds = {(s["model"], s["variant"]): s for s in scaffold}

    confidence = confidence_table(pairs)
    long_means = pd.Series({k: v["long_divergence"] for k, v in confidence.items()}, dtype=float)
    panel_median = float(long_means.median()) if len(long_means) else float("nan")

    for (model, variant), g in pert.groupby(["model", "variant"], sort=True):
        raw_short = float(g.loc[g["length"] == short, "emb_dist"].mean())
        ans_long = float(g.loc[g["length"] == long, "emb_dist_answer"].mean())
        sc = scaffolds.get((model, variant), {})
        share = max(sc.get("scaffold_share", 0.0), sc.get("common_opening_share", 0.0))
        reasons = []
        if share >= SCAFFOLD_SHARE:
            reasons.append(f"{share:.0%} of outputs open with the same preamble/scaffold")
        if short != long and ans_long > 0 and raw_short < 0.5 * ans_long:
            reasons.append(f"raw divergence at {short} tokens ({raw_short:.3f}) is under half the answer-span divergence at {long} ({ans_long:.3f})")
        if reasons:
            flags.append({"flag": "scaffold", "model": model, "variant": variant, "detail": "; ".join(reasons),
                          "values": {"scaffold_share": sc.get("scaffold_share"), "common_opening_share": sc.get("common_opening_share"),
                                     "unclosed_share": sc.get("unclosed_share"), f"raw_emb_dist@{short}": raw_short,
                                     f"answer_emb_dist@{long}": ans_long}})

        c = confidence.get((model, variant))
        if c is not None:
            flag = confident_but_unstable_flag(model, variant, c, panel_median, long)
            if flag is not None:
                flags.append(flag)

    det = determinism
    for key, verdict in (det.get("per_model") or {}).items():
        if verdict == "unknown":
            model, variant = key.split("/", 1)
            flags.append({"flag": "determinism_unknown", "model": model, "variant": variant,
                          "detail": "identical-rung metrics are NaN (non-finite logits or states): reproducibility is unknown",
                          "values": {"nan_pairs": [p for p in det.get("nan_pairs", []) if p.startswith(key + "/")][:10]}})
        elif verdict != "deterministic":
            model, variant = key.split("/", 1)
            flags.append({"flag": "nondeterministic", "model": model, "variant": variant,
                          "detail": "identical-rung pairs scored non-zero: decoding is not reproducible",
                          "values": {"nonzero_pairs": [p for p in det.get("nonzero_pairs", []) if p.startswith(key + "/")][:10]}})
    return flags


# Confident-but-unstable reads rungs that are small edits: the positive control changes the task (its
# prompt-end JS is large by design) and the identical rung is the noise floor.
_CONFIDENCE_EXCLUDED = CONTROL_RUNGS


def confidence_table(pairs: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """Per model x variant, each base prompt counted once: prompt-end top-1 and JS, long-output divergence.

    Per prompt: its own prompt-end top-1 (side A of its pairs is the base
    prompt), the mean prompt-end JS over its small-edit pairs, and the mean
    embedding distance over those pairs at the longest length. The model's
    values are the median top-1 and JS over prompts and the mean of the
    per-prompt divergences, so a prompt with many pairs weighs no more than one with few.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if pairs.empty:
        return out
    long = int(pairs["length"].max())
    small = pairs[(~pairs["rung"].isin(_CONFIDENCE_EXCLUDED)) & (pairs["length"] == long)]
    for (model, variant), g in small.groupby(["model", "variant"], sort=True):
        per = g.groupby("prompt_id").agg(top1=("top1_prob_a", "first"), js=("js", "mean"), div=("emb_dist", "mean"))
        out[(str(model), str(variant))] = {
            "n_prompts": int(len(per)), "n_pairs": int(len(g)),
            "median_top1_prob": float(per["top1"].median()), "median_js": float(per["js"].median()),
            "long_divergence": float(per["div"].mean()),
        }
    return out


def confident_but_unstable_flag(model: str, variant: str, c: dict[str, Any], panel_median: float,
                                long: int) -> dict[str, Any] | None:
    """The flag when the prompt end is near-certain (top-1 or JS) and the long output moves more than the panel's median."""
    confident_top1 = c["median_top1_prob"] >= CONFIDENT_TOP1
    confident_js = c["median_js"] <= CONFIDENT_JS
    if not (confident_top1 or confident_js) or not c["long_divergence"] > panel_median:
        return None
    return {"flag": "confident_but_unstable", "model": model, "variant": variant,
            "detail": _confident_detail(c, panel_median, long, confident_top1, confident_js),
            "values": {**c, f"emb_dist@{long}": c["long_divergence"], "panel_median": panel_median,
                       "thresholds": {"top1_prob": CONFIDENT_TOP1, "js": CONFIDENT_JS}}}


def _confident_detail(c: dict[str, Any], panel_median: float, long: int, top1: bool, js: bool) -> str:
    """The rule that fired, stated exactly: which confidence condition held (either suffices), which did not,
    and that the divergence condition is "above the panel median", which about half of any panel meets."""
    def cond(ok: bool) -> str:
        return "holds" if ok else "does not hold"

    return (f"rule: (median prompt-end top-1 >= {CONFIDENT_TOP1} or median prompt-end JS <= {CONFIDENT_JS:g}) and "
            f"{long}-token divergence above the panel median. Here: top-1 {c['median_top1_prob']:.8f} >= "
            f"{CONFIDENT_TOP1} {cond(top1)}; JS {c['median_js']:.2e} <= {CONFIDENT_JS:g} {cond(js)}; divergence "
            f"{c['long_divergence']:.3f} (mean of per-prompt means over {c['n_prompts']} base prompts, {c['n_pairs']} "
            f"pairs, positive control left out) > panel median {panel_median:.3f} holds. The panel median splits the "
            "panel's model × variants in half, so this flag marks a near-certain prompt end in the less stable half, "
            "not an outlier")
