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

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

SCAFFOLD_SHARE = 0.8
PREAMBLE_TOKENS = 8
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
        openings = Counter(tuple(ids[:PREAMBLE_TOKENS]) for ids in g["gen_ids"] if len(ids) >= PREAMBLE_TOKENS)
        common = openings.most_common(1)[0][1] / len(g) if openings else 0.0
        out.append({
            "model": model, "variant": variant, "outputs": int(len(g)),
            "scaffold_share": float(status.isin(["closed", "unclosed"]).mean()),
            "unclosed_share": float((status == "unclosed").mean()),
            "common_opening_share": float(common),
        })
    return out


def _perturbed(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs[pairs["rung"] != "identical"]


def compute_flags(pairs: pd.DataFrame, generations: pd.DataFrame | None, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Each flag: {"flag", "model", "variant", "detail", "values"}; only flags that fired."""
    flags: list[dict[str, Any]] = []
    if pairs.empty:
        return flags
    lengths = sorted(pairs["length"].unique())
    short, long = int(lengths[0]), int(lengths[-1])
    pert = _perturbed(pairs)
    scaffolds = {(s["model"], s["variant"]): s for s in scaffold_table(generations)}

    long_means = pert[pert["length"] == long].groupby(["model", "variant"])["emb_dist"].mean()
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

        top1 = float(np.median(np.concatenate([g["top1_prob_a"].to_numpy(), g["top1_prob_b"].to_numpy()])))
        js = float(g["js"].mean())
        long_mean = float(long_means.get((model, variant), float("nan")))
        confident = top1 >= CONFIDENT_TOP1 or js <= CONFIDENT_JS
        if confident and long_mean > panel_median:
            flags.append({"flag": "confident_but_unstable", "model": model, "variant": variant,
                          "detail": f"prompt-end top-1 {top1:.8f} / JS {js:.2e}, yet {long}-token divergence {long_mean:.3f} "
                                    f"is above the panel median {panel_median:.3f}",
                          "values": {"median_top1_prob": top1, "mean_js": js, f"emb_dist@{long}": long_mean,
                                     "panel_median": panel_median}})

    det = manifest.get("determinism", {})
    for key, verdict in (det.get("per_model") or {}).items():
        if verdict != "deterministic":
            model, variant = key.split("/", 1)
            flags.append({"flag": "nondeterministic", "model": model, "variant": variant,
                          "detail": "identical-rung pairs scored non-zero: decoding is not reproducible",
                          "values": {"nonzero_pairs": [p for p in det.get("nonzero_pairs", []) if p.startswith(key + "/")][:10]}})
    return flags
