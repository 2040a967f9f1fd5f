"""Teacher-forced drift per model x variant x length, pooled over positions as llama.cpp reports it.

Reads drift.parquet's ``tf_*`` columns (harness.score.tf_drift). Position
statistics pool every generated position of every prompt (mean, median, p99,
max of KL(ref || variant); same-top-1 share; mean change of the reference
token's probability); the intervals resample base prompts, each prompt
bringing all its positions (harness.summary.stats.cluster_bootstrap_ci on the
per-position values: the statistic is the pooled mean itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.models.variants import ENGINE_FLOOR
from harness.score.drift import reference_of
from harness.summary.collapse import _base_prompt_of_keys
from harness.summary.stats import cluster_bootstrap_ci


def _pooled(values: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    lo, hi = cluster_bootstrap_ci(values, prompts)
    return {"mean": float(values.mean()) if values.size else float("nan"), "ci95": [lo, hi]}


def tf_drift_table(drift: pd.DataFrame, pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model x variant x length with a teacher-forced reading: KLD statistics, same top-1, dp, first top-1 change.

    Drift rows are one per decoded prompt (each base prompt and each edited one); the unit of the
    intervals is the base prompt an output belongs to (``pairs`` says which), as for the free-running D.
    """
    out: list[dict[str, Any]] = []
    if drift.empty or "tf_positions" not in drift.columns:
        return out
    base_of = _base_prompt_of_keys(pairs)
    present = {m: set(g["variant"].astype(str)) for m, g in drift.groupby("model")}
    rows = drift[drift["tf_positions"].fillna(0) > 0]
    for (model, variant, length), g in rows.groupby(["model", "variant", "length"], sort=True):
        pos = g["tf_positions"].astype(int).to_numpy()
        prompt = g["prompt_key_a"].astype(str).map(lambda k: base_of.get(k, k)).to_numpy()
        per_pos_prompt = np.repeat(prompt, pos)
        kl = np.concatenate([np.asarray(v, dtype=np.float64) for v in g["tf_kl_steps"]])
        # Per-prompt shares and means repeated over their positions: the cluster bootstrap of these is the
        # bootstrap of the pooled per-position quantity (each prompt's sum and count are exact).
        same = np.repeat(g["tf_same_top1"].to_numpy(float), pos)
        dp = np.repeat(g["tf_dp_mean"].to_numpy(float), pos)
        first = g["tf_first_top1_diff"].to_numpy(float)
        changed = ~np.isnan(first)
        out.append({
            "model": model, "variant": variant, "reference": reference_of(str(variant), present[model]), "length": int(length),
            # the unquantized file in another engine (f16@llamacpp): what the engine alone changes
            "engine_floor": str(variant) in ENGINE_FLOOR.values(),
            "n_prompts": int(len(set(prompt))), "n_outputs": int(len(g)), "positions": int(pos.sum()),
            "kl_mean": _pooled(kl, per_pos_prompt), "kl_median": float(np.median(kl)),
            "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
            "same_top1": _pooled(same, per_pos_prompt), "dp_mean": _pooled(dp, per_pos_prompt),
            "outputs_top1_changed": int(changed.sum()),
            # Median over the outputs whose top-1 changed at all; the others have no such step (never 0).
            "first_top1_diff_median": float(np.median(first[changed])) if changed.any() else float("nan"),
        })
    return out
