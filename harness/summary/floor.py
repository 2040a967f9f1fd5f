"""The noise floor of each model x variant: can its perturbation distances be read at all?

The identical rung decodes the same prompt twice. Its distance is the floor:
what the decode moves with no edit at all. Under deterministic decoding it is
exactly 0 and every perturbation distance is a finding. When it is not 0
(bitsandbytes int8 on CPU: 8 of 8 identical pairs differ, 0.277 against a
noop_format distance of 0.287; issue 30), a perturbation distance is the sum
of the edit's effect and that noise, and when the noise is as large as the
distances there is nothing left to read: the variant is ``unmeasurable``, and
its drift, KLD, answers and rung means are shown with that reason, never as a
finding.

Per model x variant x length, on ``METRIC`` (the output embedding distance):

- ``exact``: every identical pair is exactly 0 (the decode is reproducible);
- ``noisy``: the floor is not 0 but clearly below the perturbations: its mean
  is at most ``FLOOR_SHARE`` of the mean over the meaning-preserving
  perturbation pairs (noop_format .. option_order; not semantic_small or the
  positive control, whose distances are meant to be large) AND the prompt-level
  95% CI of (perturbation - floor) lies above 0; the perturbation distances
  carry the floor, and the gate can subtract it (``relative_to_noise_floor``);
- ``unmeasurable``: the floor is not 0 and not clearly below them;
- ``unknown``: no identical pair or no perturbation pair was scored.

Means are per base prompt (each prompt counts once), the unit of every test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import NOISE_FLOOR, rung_info
from harness.summary.stats import cluster_bootstrap_ci, cluster_bootstrap_diff_ci

METRIC = "emb_dist"
FLOOR_SHARE = 0.25
"""A floor counts as clearly below the perturbations when its mean is at most this share of theirs: at least three
quarters of a perturbation distance is then the edit's own effect. Half was too lenient: SmolLM2-135M int8
(bitsandbytes, CPU) on tasks-small at L = 32 had 21 of 36 identical pairs non-zero and a floor of 0.122 against
0.252 (48%), with noop_format at 0.177 -- the floor was two thirds of the invisible edit's distance."""
EXACT, NOISY, UNMEASURABLE, UNKNOWN = "exact", "noisy", "unmeasurable", "unknown"
VERDICTS = (EXACT, NOISY, UNMEASURABLE, UNKNOWN)


def _meaning_preserving(rung: str) -> bool:
    try:
        info = rung_info(rung)
    except KeyError:
        return False
    return info.is_perturbation and not info.changes_task


def _prompt_mean(g: pd.DataFrame) -> float:
    return float(g.groupby(g["prompt_id"].astype(str))[METRIC].mean().mean()) if len(g) else float("nan")


def floor_row(model: str, variant: str, length: int, g: pd.DataFrame) -> dict[str, Any]:
    """The floor verdict of one model x variant x length from its pairs (NaN metric rows dropped and counted)."""
    finite = g[g[METRIC].notna()]
    ident = finite[finite["rung"] == NOISE_FLOOR]
    pert = finite[finite["rung"].map(_meaning_preserving)]
    row: dict[str, Any] = {
        "model": model, "variant": variant, "length": int(length), "metric": METRIC,
        "n_identical": int(len(ident)), "n_identical_nonzero": int((ident[METRIC] != 0).sum()),
        "n_perturbed": int(len(pert)), "n_missing": int(g[METRIC].isna().sum()),
        "floor": _prompt_mean(ident), "floor_ci95": [float("nan"), float("nan")],
        "perturbed": _prompt_mean(pert), "margin_ci95": [float("nan"), float("nan")],
        "rungs": {str(r): _prompt_mean(x) for r, x in pert.groupby("rung", sort=False)},
    }
    if ident.empty or pert.empty:
        row.update(verdict=UNKNOWN, reason="no identical pair" if ident.empty else "no perturbation pair was scored")
        return row
    if row["n_identical_nonzero"] == 0:
        # No zero-width interval (harness.summary.stats.cluster_bootstrap_ci): the exact count says it all.
        row.update(verdict=EXACT,
                   reason=f"all {len(ident)} identical pairs are exactly 0: the decode is reproducible")
        return row
    row["floor_ci95"] = list(cluster_bootstrap_ci(ident[METRIC].to_numpy(float), ident["prompt_id"].astype(str).to_numpy()))
    # One value per prompt on each side, so the interval is about the prompt-weighted margin.
    fi = ident.groupby(ident["prompt_id"].astype(str))[METRIC].mean()
    pe = pert.groupby(pert["prompt_id"].astype(str))[METRIC].mean()
    lo, hi, _ = cluster_bootstrap_diff_ci(fi.to_numpy(), fi.index.to_numpy(), pe.to_numpy(), pe.index.to_numpy())
    row["margin_ci95"] = [lo, hi]
    share = row["floor"] / row["perturbed"] if row["perturbed"] > 0 else float("inf")
    row["floor_share"] = float(share)
    numbers = (f"identical-rung {METRIC} {row['floor']:.3f} ({row['n_identical_nonzero']} of {len(ident)} pairs non-zero) "
               f"against {row['perturbed']:.3f} over the perturbation rungs")
    if share <= FLOOR_SHARE and np.isfinite(lo) and lo > 0:
        row.update(verdict=NOISY, reason=f"{numbers}: the floor is {share:.0%} of it, clearly below; "
                                         "perturbation distances include it")
    else:
        why = (f"the floor is {share:.0%} of it (more than {FLOOR_SHARE:.0%})" if share > FLOOR_SHARE else
               "the margin's CI does not exclude 0" if np.isfinite(lo) else "too few prompts for the margin's CI")
        row.update(verdict=UNMEASURABLE, reason=f"{numbers}: {why}; the decode's own noise is as large as the "
                                                "edits' effect, so no distance of this variant is a finding")
    return row


def floor_table(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model x variant x length: the noise-floor verdict (exact / noisy / unmeasurable / unknown)."""
    if pairs.empty or METRIC not in pairs.columns:
        return []
    return [floor_row(str(m), str(v), int(L), g)
            for (m, v, L), g in pairs.groupby(["model", "variant", "length"], sort=True)]


def unmeasurable(floor: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """{(model, variant): reason} for every model x variant unmeasurable at some length (its first such reason)."""
    out: dict[tuple[str, str], str] = {}
    for r in floor:
        if r["verdict"] == UNMEASURABLE:
            out.setdefault((r["model"], r["variant"]), f"{r['reason']} (L={r['length']})")
    return out


def floor_flags(floor: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``unmeasurable`` flag per model x variant."""
    return [{"flag": "unmeasurable", "model": m, "variant": v, "detail": reason, "values": {}}
            for (m, v), reason in sorted(unmeasurable(floor).items())]
