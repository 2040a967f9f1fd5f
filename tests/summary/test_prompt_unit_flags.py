"""The collapse verdict with prompt-level intervals, and confident-but-unstable counted per base prompt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.summary.collapse import COLLAPSE, NO_COLLAPSE, UNDETERMINED, collapse_flags, drift_table
from harness.summary.flags import CONFIDENT_JS, CONFIDENT_TOP1, compute_flags, scaffold_table

N = 8  # base prompts
EDITS = ("trailing_space", "final_question", "comma_inserted")  # three pairs per prompt, sharing side A


def _pairs(variant: str, per_prompt: list[float], model: str = "m", length: int = 32, **cols) -> list[dict]:
    rows = []
    for i, v in enumerate(per_prompt):
        for j, kind in enumerate(EDITS):
            rows.append({"model": model, "variant": variant, "rung": "noop_format", "edit_kind": kind, "length": length,
                         "pair_id": f"q{i}/noop_format/{kind}", "prompt_id": f"q{i}", "prompt_key_a": f"k{i}",
                         "prompt_key_b": f"k{i}-{j}", "emb_dist": v + 0.002 * (j - 1), **cols})
    return rows


def _drift(variant: str, per_prompt: list[float], model: str = "m", length: int = 32) -> pd.DataFrame:
    # One drift row per decoded prompt: the base prompt and each edited one (keys map back to the base prompt).
    rows = []
    for i, v in enumerate(per_prompt):
        for key in [f"k{i}"] + [f"k{i}-{j}" for j in range(len(EDITS))]:
            rows.append({"model": model, "variant": variant, "length": length, "rung": "drift", "pair_id": f"drift/{key}",
                         "prompt_id": key, "prompt_key_a": key, "prompt_key_b": key, "emb_dist": v})
    return pd.DataFrame(rows)


def _verdict(int4_p: list[float], int4_d: list[float]) -> tuple[dict, list[dict]]:
    ref = [0.30 + 0.01 * (i % 3) for i in range(N)]
    pairs = pd.DataFrame(_pairs("bf16", ref) + _pairs("int4", int4_p))
    drift = pd.concat([_drift("bf16", [0.0] * N), _drift("int4", int4_d)], ignore_index=True)
    table = drift_table(pairs, drift)
    (row,) = [r for r in table if r["variant"] == "int4"]
    (ref_row,) = [r for r in table if r["variant"] == "bf16"]
    assert ref_row["collapse"] is None  # the reference is not judged against itself
    return row, collapse_flags(table)


def test_collapse_when_both_intervals_clear_zero():
    row, flags = _verdict([0.05 + 0.01 * (i % 2) for i in range(N)], [0.5 + 0.02 * (i % 3) for i in range(N)])
    assert row["collapse"] == COLLAPSE
    assert row["delta_p_ci95"][1] < 0 < row["d_minus_p_ci95"][0]
    assert row["n_prompts"] == N and row["n_pairs"] == N * len(EDITS) and row["drift_prompts"] == N
    assert row["delta_p_prompts"] == N and row["d_minus_p_prompts"] == N  # drift rows grouped by their base prompt
    (flag,) = flags
    assert flag["flag"] == "collapse" and flag["variant"] == "int4" and "both 95% CIs clear of 0" in flag["detail"]


def test_no_collapse_when_the_variant_moves_more_than_the_reference():
    row, flags = _verdict([0.45 + 0.01 * (i % 2) for i in range(N)], [0.6] * N)
    assert row["collapse"] == NO_COLLAPSE and row["delta_p_ci95"][0] > 0
    assert flags == []


def test_not_determined_when_an_interval_straddles_zero():
    # P - P(ref) per prompt alternates -0.12 / +0.10 (mean -0.01): the pattern's sign, not shown.
    ref = [0.30 + 0.01 * (i % 3) for i in range(N)]
    int4 = [r + (-0.12 if i % 2 == 0 else 0.10) for i, r in enumerate(ref)]
    row, flags = _verdict(int4, [0.6] * N)
    assert row["collapse"] == UNDETERMINED
    assert row["delta_p"] < 0 and row["delta_p_ci95"][0] < 0 < row["delta_p_ci95"][1]
    (flag,) = flags
    assert flag["flag"] == "collapse_not_determined" and "straddles 0" in flag["detail"]
    # The old rule (two point means, no uncertainty) would have called this a collapse.
    assert row["perturbation_distance"] < row["reference_perturbation_distance"] < row["drift"]


def test_too_few_prompts_is_not_determined():
    pairs = pd.DataFrame(_pairs("bf16", [0.3]) + _pairs("int4", [0.05]))
    drift = pd.concat([_drift("bf16", [0.0]), _drift("int4", [0.5])], ignore_index=True)
    (row,) = [r for r in drift_table(pairs, drift) if r["variant"] == "int4"]
    assert row["collapse"] == UNDETERMINED and np.isnan(row["delta_p_ci95"][0])


# --- confident-but-unstable -----------------------------------------------------------------------

def _panel(confident_js: float = 1e-9, confident_top1: float = 0.9, div: float = 0.4) -> pd.DataFrame:
    """Three models at lengths 8 and 64; 'sure' has the given prompt-end values and long divergence."""
    rows = []
    spec = {"sure": (confident_top1, confident_js, div), "plain": (0.6, 0.01, 0.1), "other": (0.7, 0.02, 0.2)}
    for model, (top1, js, d) in spec.items():
        for length in (8, 64):
            rows += _pairs("bf16", [d] * N, model=model, length=length, top1_prob_a=top1, top1_prob_b=top1, js=js,
                           emb_dist_answer=d, first_div=1)
            # The positive control changes the task: large JS by design, left out of this flag.
            rows += [{**r, "rung": "positive_control", "pair_id": r["pair_id"].replace("noop_format", "positive_control"),
                      "js": 0.5} for r in _pairs("bf16", [0.9] * N, model=model, length=length, top1_prob_a=top1,
                                                    top1_prob_b=0.5, emb_dist_answer=0.9, first_div=1)]
    return pd.DataFrame(rows)


def _cbu(pairs: pd.DataFrame) -> list[dict]:
    return [f for f in compute_flags(pairs, scaffold_table(None), {}) if f["flag"] == "confident_but_unstable"]


def test_confident_but_unstable_fires_on_tiny_js_and_large_long_divergence():
    (flag,) = _cbu(_panel())
    assert flag["model"] == "sure"
    v = flag["values"]
    assert v["median_js"] == pytest.approx(1e-9) and v["n_prompts"] == N and v["n_pairs"] == N * len(EDITS)
    assert v["long_divergence"] == pytest.approx(0.4) and v["panel_median"] == pytest.approx(0.2)
    # Thresholds are stated in the text.
    assert f">= {CONFIDENT_TOP1}" in flag["detail"] and f"<= {CONFIDENT_JS:g}" in flag["detail"]
    assert "positive control left out" in flag["detail"]


def test_confident_but_unstable_is_silent_when_the_prompt_end_is_not_confident():
    assert _cbu(_panel(confident_js=1e-3)) == []


def test_confident_but_unstable_is_silent_when_the_long_output_is_stable():
    assert _cbu(_panel(div=0.15)) == []  # below the panel median (0.15 < 0.2 = 'other')


def test_top1_branch_fires_too():
    (flag,) = _cbu(_panel(confident_js=1e-3, confident_top1=0.9999))
    assert flag["values"]["median_top1_prob"] == pytest.approx(0.9999)
