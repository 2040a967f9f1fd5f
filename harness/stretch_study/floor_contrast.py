"""The floor study's paired contrasts: does behaviour under small prompt changes move before KL notices?

Every column of the floor table is a level with its own CI; whether a bit
width *changed* something is a paired question, asked here per base prompt
(the unit the CIs resample):

- ``dp_ref``: P(q) - P(bf16) on the same pairs (perturbation sensitivity
  relative to the reference); ``dp_floor``: the same against the engine floor
  ``f16@llamacpp`` (what quantization moved, llama.cpp's own change removed);
- ``dkl_floor``: KL(ref‖q) - KL(ref‖f16) on the same prompts and reference
  tokens, and ``dtop1_floor`` for the same-top-1 share: when KL "notices" a
  bit width (every variant's KL against bf16 is positive, so the baseline is
  the F16 file read by the same engine); without an engine floor in the run
  the baseline is bf16 itself (KL 0);
- ``dacc_ref``: accuracy(q) - accuracy(bf16) on the prompts with a known answer.

Each is the mean over prompts of the prompt's mean difference, a 95% percentile
bootstrap CI (prompts resampled, harness.stretch.growth.prompt_mean_ci) and the
minimum detectable difference at 80% power (harness.summary.power.mde, σ the
SD of the per-prompt differences). ``moves`` = the CI excludes 0.
:func:`floor_verdict` says, per model, the highest bit width at which each
view first moves, and lists the widths where P moves while KL does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.stretch.growth import prompt_mean_ci
from harness.summary.power import mde, prompt_sd

ENGINE_FLOOR = "f16@llamacpp"
"""The floor variant whose KL is llama.cpp's own change (the F16 file, no quantization)."""


def paired(q: pd.DataFrame, base: pd.DataFrame, col: str, on: str) -> dict[str, Any]:
    """Mean over prompts of the per-prompt mean of ``q[col] - base[col]`` matched on ``on``, CI, MDE, moved."""
    m = q[[on, "prompt_id", col]].merge(base[[on, col]], on=on, suffixes=("", "_base"))
    diff = (m[col].astype(float) - m[f"{col}_base"].astype(float)).to_numpy()
    ok = np.isfinite(diff)
    per = pd.Series(diff[ok]).groupby(m["prompt_id"].to_numpy()[ok]).mean()
    c = prompt_mean_ci(per.to_numpy(), per.index.to_numpy())
    lo, hi = c["ci"]
    return {"mean": c["mean"], "ci_low": lo, "ci_high": hi, "n_prompts": int(per.size),
            "mde": mde(prompt_sd(per.to_numpy()), int(per.size)),
            "moves": bool(np.isfinite(lo) and (lo > 0 or hi < 0))}


def contrasts(prompts: pd.DataFrame, pairs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per model x non-reference variant with the paired contrasts (columns ``<name>_{mean,ci_low,...}``)."""
    rows = []
    for model, g in prompts.groupby("model", sort=False):
        pa = pairs[pairs["model"] == model]
        ref_pr, ref_pa = g[g["variant"] == reference], pa[pa["variant"] == reference]
        has_floor = (g["variant"] == ENGINE_FLOOR).any()
        floor_pr = g[g["variant"] == ENGINE_FLOOR] if has_floor else None
        floor_pa = pa[pa["variant"] == ENGINE_FLOOR] if has_floor else None
        for v, gv in g.groupby("variant", sort=False):
            if v == reference:
                continue
            pv = pa[pa["variant"] == v]
            # The engine floor is the baseline of llama.cpp's own files only (an HF variant's KL is against bf16).
            use_floor = has_floor and v != ENGINE_FLOOR and v.endswith("@llamacpp")
            row: dict[str, Any] = {"model": model, "variant": v, "bits": int(gv["bits"].iloc[0]),
                                   "kl_baseline": ENGINE_FLOOR if use_floor else reference}
            parts = {"dp_ref": (pv, ref_pa, "p_tokens", "pair_id"),
                     "dacc_ref": (gv, ref_pr, "correct", "key")}
            if use_floor:
                parts["dp_floor"] = (pv, floor_pa, "p_tokens", "pair_id")
                parts["dkl_floor"] = (gv, floor_pr, "kl_ref_tokens", "key")
                parts["dtop1_floor"] = (gv, floor_pr, "same_top1_ref_tokens", "key")
            else:  # against bf16 itself: KL 0 and same top-1 1 by construction
                parts["dkl_floor"] = (gv, ref_pr, "kl_ref_tokens", "key")
                parts["dtop1_floor"] = (gv, ref_pr, "same_top1_ref_tokens", "key")
            for name, (a, b, col, on) in parts.items():
                for k, val in paired(a, b, col, on).items():
                    row[f"{name}_{k}"] = val
            rows.append(row)
    return pd.DataFrame(rows)


def floor_verdict(contrast: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per model: the highest bit width where KL (vs the engine floor) and P (vs bf16) move, and where P leads."""
    out: dict[str, dict[str, Any]] = {}
    for model, g in contrast.groupby("model", sort=False):
        g = g[g["variant"] != ENGINE_FLOOR].sort_values("bits", ascending=False)

        def first(col: str) -> int | None:
            hit = g[g[col]]
            return int(hit["bits"].max()) if len(hit) else None

        kl_bits, p_bits = first("dkl_floor_moves"), first("dp_ref_moves")
        p_first = g[g["dp_ref_moves"] & ~g["dkl_floor_moves"]]["variant"].tolist()
        out[str(model)] = {"kl_first_bits": kl_bits, "p_first_bits": p_bits,
                           "acc_first_bits": first("dacc_ref_moves"),
                           "p_moves_before_kl": p_first,
                           "dp_ref_mde_max": float(g["dp_ref_mde"].max()) if len(g) else float("nan")}
    return out


def verdict_lines(verdict: dict[str, dict[str, Any]]) -> list[str]:
    def bits(b):
        return "no width" if b is None else f"{b} bits"

    lines = []
    for model, v in verdict.items():
        lead = ", ".join(v["p_moves_before_kl"]) or "none"
        m = v.get("dp_ref_mde_max")  # None once the summary's NaN went through JSON
        lines.append(f"- {model}: KL (against its baseline) first moves at {bits(v['kl_first_bits'])}; P (against "
                     f"bf16) at {bits(v['p_first_bits'])}; accuracy at {bits(v['acc_first_bits'])}. Widths where P "
                     f"moves and KL does not: {lead}. Largest MDE of ΔP over the widths: "
                     f"{'–' if m is None or not np.isfinite(m) else f'{m:.3g}'} (80% power).")
    return lines
