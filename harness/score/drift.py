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

import dataclasses
from typing import Any, Callable, Sequence

import pandas as pd

from harness.ladder.records import CONTROL_RUNGS, PromptPair
from harness.models.loading import load_tokenizer
from harness.models.registry import ModelEntry
from harness.score.pairs import score_pairs, scored_sides_from_frame
from harness.score.records import PairSides, ScoredSide
from harness.models.variants import REFERENCE, parse_variant

DRIFT_RUNG = "drift"
# The positive control is meant to move; it is left out of the perturbation
# distance P (with the noise floor) so that P measures response to small edits only.
EXCLUDED_FROM_P = CONTROL_RUNGS


def reference_of(variant: str, present=None) -> str:
    """bf16 (bf16-nothink for a -nothink variant) on the HF engine: spelled ``bf16``, or ``bf16@hf``
    when only that spelling is among ``present`` (the variants the run has for this model)."""
    ref = REFERENCE + ("-nothink" if parse_variant(variant).template_overrides else "")
    if present is not None and ref not in present and f"{ref}@hf" in present:
        return f"{ref}@hf"
    return ref


def drift_sides(
    variant: str,
    scored: dict[tuple[str, int], ScoredSide],
    reference: dict[tuple[str, int], ScoredSide],
    prompt_of_key: dict[str, str],
    ref_name: str | None = None,
) -> list[PairSides]:
    """Sides (reference output, variant output) for every prompt both decoded (``ref_name``: the reference's
    spelling in this run, default reference_of(variant))."""
    out = []
    ref_name = ref_name or reference_of(variant)
    if variant == ref_name:
        keys = sorted(k for (k, rep) in scored if rep == 1 and (k, 0) in scored)
        pairs = [(scored[(k, 0)], scored[(k, 1)], k) for k in keys]
    else:
        keys = sorted(k for (k, rep) in scored if rep == 0 and (k, 0) in reference)
        pairs = [(reference[(k, 0)], scored[(k, 0)], k) for k in keys]
    for ref_side, var_side, k in pairs:
        pid = prompt_of_key.get(k, k)
        pair = PromptPair(f"drift/{k}", pid, DRIFT_RUNG, f"{ref_name}->{variant}", "", "", "generated")
        out.append(PairSides(pair, ref_side, var_side))
    return out


def drift_frames(gens: pd.DataFrame, models: Sequence[ModelEntry], lengths: Sequence[int],
                 embed: Callable[[list[str]], Any]) -> list[pd.DataFrame]:
    """Every variant against its reference on the same prompts, scored like pairs (one frame per model x variant).

    Works from the run's generations table (the cells may have run anywhere);
    each model's tokenizer is loaded once, only to decode the ids for the text metrics.
    """
    out: list[pd.DataFrame] = []
    if gens.empty:
        return out
    by_name = {e.name: e for e in models}
    for model, g in gens.groupby("model", sort=False):
        scored = {v: scored_sides_from_frame(f, lengths) for v, f in g.groupby("variant", sort=False)}
        prompt_of_key = dict(zip(g["prompt_key"], g.get("prompt_id", g["prompt_key"])))
        tok = None
        for variant, sides_v in scored.items():
            ref = reference_of(variant, scored)
            if ref not in scored:
                continue
            sides = drift_sides(variant, sides_v, scored[ref], prompt_of_key, ref)
            if not sides:
                continue
            if tok is None:
                tok = load_tokenizer(by_name[model])  # all variants of a model share one tokenizer
            rows, _ = score_pairs(sides, lengths, lambda ids: tok.decode(list(ids), skip_special_tokens=False), embed)
            out.append(pd.DataFrame([dataclasses.asdict(dataclasses.replace(r, variant=variant)) for r in rows]))
    return out
