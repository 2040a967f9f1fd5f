"""Baseline drift: how far a variant's output is from the reference's on the *same* prompt.

Perturbation distance alone cannot tell a robust model from a collapsed one (a
model that prints the same text for every prompt has distance 0). Drift is the
second axis: low perturbation distance together with high drift is collapse.

Reference of a variant: ``bf16`` (or ``bf16-nothink`` for a ``-nothink``
variant). The reference's own drift is measured between its two independent
decodes of the base prompts (replicates 0 and 1), so it is exactly 0 under
deterministic decoding and non-zero otherwise.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.ladder.records import PromptPair
from harness.score.pairs import PairSides, ScoredSide
from harness.models.variants import REFERENCE, parse_variant

DRIFT_RUNG = "drift"
# The positive control is meant to move; it is left out of the perturbation
# distance P so that P measures response to small edits only.
EXCLUDED_FROM_P = ("identical", "positive_control")


def reference_of(variant: str) -> str:
    return REFERENCE + ("-nothink" if parse_variant(variant).template_overrides else "")


def drift_sides(
    variant: str,
    scored: dict[tuple[str, int], ScoredSide],
    reference: dict[tuple[str, int], ScoredSide],
    prompt_of_key: dict[str, str],
) -> list[PairSides]:
    """Sides (reference output, variant output) for every prompt both decoded."""
    out = []
    if variant == reference_of(variant):
        keys = sorted(k for (k, rep) in scored if rep == 1 and (k, 0) in scored)
        pairs = [(scored[(k, 0)], scored[(k, 1)], k) for k in keys]
    else:
        keys = sorted(k for (k, rep) in scored if rep == 0 and (k, 0) in reference)
        pairs = [(reference[(k, 0)], scored[(k, 0)], k) for k in keys]
    for ref_side, var_side, k in pairs:
        pid = prompt_of_key.get(k, k)
        pair = PromptPair(f"drift/{k}", pid, DRIFT_RUNG, f"{reference_of(variant)}->{variant}", "", "", "generated")
        out.append(PairSides(pair, ref_side, var_side))
    return out


def drift_table(pairs: pd.DataFrame, drift: pd.DataFrame, metric: str = "emb_dist") -> list[dict[str, Any]]:
    """Per model x variant x length: perturbation distance P, drift D, and the collapse verdict."""
    out: list[dict[str, Any]] = []
    if pairs.empty:
        return out
    pert = pairs[~pairs["rung"].isin(EXCLUDED_FROM_P)]
    P = pert.groupby(["model", "variant", "length"])[metric].mean()
    D = drift.groupby(["model", "variant", "length"])[metric].mean() if not drift.empty else pd.Series(dtype=float)
    N = drift.groupby(["model", "variant", "length"])[metric].size() if not drift.empty else pd.Series(dtype=int)
    for (model, variant, length), p in P.items():
        ref = reference_of(variant)
        p_ref = P.get((model, ref, length))
        d = D.get((model, variant, length))
        collapsed = bool(variant != ref and p_ref is not None and d is not None and p < p_ref and d > p)
        out.append({
            "model": model, "variant": variant, "length": int(length), "reference": ref,
            "perturbation_distance": float(p), "reference_perturbation_distance": None if p_ref is None else float(p_ref),
            "drift": None if d is None else float(d), "drift_prompts": int(N.get((model, variant, length), 0)),
            "collapse": collapsed,
        })
    return out


def collapse_flags(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flags = []
    longest = max((r["length"] for r in table), default=None)
    for r in table:
        if r["collapse"] and r["length"] == longest:
            flags.append({
                "flag": "collapse", "model": r["model"], "variant": r["variant"],
                "detail": (f"perturbation distance {r['perturbation_distance']:.3f} < {r['reference']}'s "
                           f"{r['reference_perturbation_distance']:.3f}, but drift from {r['reference']} is "
                           f"{r['drift']:.3f} > {r['perturbation_distance']:.3f}: less responsive, not more stable"),
                "values": {k: r[k] for k in ("length", "perturbation_distance", "reference_perturbation_distance", "drift")},
            })
    return flags
