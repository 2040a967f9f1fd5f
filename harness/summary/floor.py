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
- ``noisy``: the floor is not 0 but clearly below the perturbations: the
  prompt-level 95% CI of (perturbation - floor / ``FLOOR_SHARE``) lies above 0,
  i.e. the floor is shown to be less than ``FLOOR_SHARE`` of the mean over the
  meaning-preserving perturbation pairs (noop_format .. option_order; not
  semantic_small or the positive control, whose distances are meant to be
  large); the perturbation distances carry the floor, and the gate can
  subtract it (``relative_to_noise_floor``);
- ``unmeasurable``: the floor is not 0 and not clearly below them;
- ``unknown``: no identical pair or no perturbation pair was scored.

Means are per base prompt (each prompt counts once), the unit of every test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import NOISE_FLOOR, rung_info
from harness.summary.stats import BOOTSTRAP_RESAMPLES, cluster_bootstrap_ci, cluster_bootstrap_diff_ci

METRIC = "emb_dist"
FLOOR_SHARE = 0.5
"""A floor is clearly below the perturbations when the 95% CI of (perturbation - floor / FLOOR_SHARE) lies above 0.

Why one half, from what the distances are: a perturbation pair's distance carries the edit's effect and the decode's
own noise (the identical rung measures the noise alone); to first order perturbation = edit + floor, so floor < half
the perturbation distance is exactly "the edit moves the output more than the noise does" -- the smallest share at
which a rung mean says more about the edit than about the decode. Above it most of every distance is noise whatever
the model. The CI (not the point estimate) makes the cut hold at the run's prompt count. Simulated on planted
prompt-clustered data (tests/summary/test_floor_threshold.py; 8-36 prompts, 100 runs per setting): a floor at the
boundary passed as ``noisy`` in 1-7% of runs when most decodes deviate, up to 11% when one in ten does (the floor then
rests on a handful of identical pairs); a floor at 70% of the distances in at most 2% (dense) to 9% (sparse); a
floor at 10% with three decodes in ten deviating was called unmeasurable in at most 3% of runs from 16 prompts on
(15% at 16 prompts when one in ten deviates), and a dense floor at 25%, which the former point cut failed half the
time, in none at 36 prompts. Neither the cut nor its check uses any measured model.
(It replaced a point cut at 25% with a CI of (perturbation - floor) above 0, chosen after seeing SmolLM2 int8.)"""
EXACT, NOISY, UNMEASURABLE, UNKNOWN = "exact", "noisy", "unmeasurable", "unknown"
VERDICTS = (EXACT, NOISY, UNMEASURABLE, UNKNOWN)


def _meaning_preserving(rung: str) -> bool:
    try:
        info = rung_info(rung)
    except KeyError:
        return False
    return info.is_perturbation and not info.changes_task


def excess_ci(floor: pd.Series, perturbed: pd.Series, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% CI of mean(perturbed) - mean(floor) / FLOOR_SHARE over the prompts both have (one value per prompt each,
    indexed by prompt id), resampling prompts: above 0 when the floor is shown below FLOOR_SHARE of the perturbation
    distance. (nan, nan) with too few prompts."""
    lo, hi, _ = cluster_bootstrap_diff_ci((floor / FLOOR_SHARE).to_numpy(), floor.index.to_numpy(), perturbed.to_numpy(),
                                          perturbed.index.to_numpy(), resamples=resamples)
    return float(lo), float(hi)


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
    elo, ehi = excess_ci(fi, pe)
    row["excess_ci95"] = [elo, ehi]
    share = row["floor"] / row["perturbed"] if row["perturbed"] > 0 else float("inf")
    row["floor_share"] = float(share)
    numbers = (f"identical-rung {METRIC} {row['floor']:.3f} ({row['n_identical_nonzero']} of {len(ident)} pairs non-zero) "
               f"against {row['perturbed']:.3f} over the perturbation rungs")
    if np.isfinite(elo) and elo > 0:
        row.update(verdict=NOISY, reason=f"{numbers}: the floor is {share:.0%} of it, clearly below {FLOOR_SHARE:.0%} "
                                         f"(perturbation - floor/{FLOOR_SHARE:g}: 95% CI [{elo:.3f}, {ehi:.3f}]); "
                                         "perturbation distances include it")
    else:
        why = (f"the floor is {share:.0%} of it, not shown below {FLOOR_SHARE:.0%} (perturbation - "
               f"floor/{FLOOR_SHARE:g}: 95% CI [{elo:.3f}, {ehi:.3f}] reaches 0)" if np.isfinite(elo) else
               "too few prompts for the CI of the floor's share")
        row.update(verdict=UNMEASURABLE, reason=f"{numbers}: {why}; the decode's own noise is not shown smaller "
                                                "than the edits' effect, so no distance of this variant is a finding")
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
