"""Answer-level sensitivity: is the answer still right when the prompt moves, or when the weights do?

From pairs.parquet alone (``correct_a``, ``correct_b``: 1 / 0 / NaN, see
harness.score.answers). Per model x variant x rung x length, over the pairs
whose two sides both have a correctness (``../shared/METRICS.md``):

- accuracy of side a and of side b (means over pairs);
- flip rate: share of pairs whose correctness differs between the sides, either direction;
- PromptSensiScore (ProSA): per base prompt the mean |Y(a) - Y(b)| over its pairs, averaged over prompts;
- spread (FormatSpread): per base prompt max - min of Y over its variants on the rung (side a and every
  side b), averaged over prompts;
- Performance Drop Rate (PromptBench): 1 - sum Y(b) / sum Y(a); NaN with a reason when sum Y(a) = 0.

Every interval resamples base prompts (harness.summary.stats). Per variant
against its reference (``dutta_flips``): the share of base prompts whose
correctness differs between the two weights (Dutta et al. 2024), with the
accuracy of each; and the same over every decoded prompt with an expected
answer (``outputs``: the edited prompts too, each once).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _ss

from harness.ladder.records import NOISE_FLOOR, rung_order
from harness.score.drift import reference_of
from harness.summary.proportions import METHOD as PROPORTION_METHOD
from harness.summary.proportions import proportion_ci
from harness.summary.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, cluster_bootstrap_ci, expanded_level

ANSWER_COLUMNS = ("correct_a", "correct_b")
ANSWERS_VERSION = "3"
"""Part of the statistics memo key: bump when these tables change (2: Dutta flips over every answered output;
3: accuracy and flip-rate intervals are score intervals, harness.summary.proportions)."""
NO_PDR_REASON = "no correct answer on side a (sum Y(a) = 0): the drop rate is undefined"


def _mean_ci(values: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    lo, hi = cluster_bootstrap_ci(values, prompts)
    return {"mean": float(values.mean()) if values.size else float("nan"), "ci95": [lo, hi]}


def _share_ci(values: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    """A share of 0/1 outcomes: a score interval at the design-effect n (harness.summary.proportions), which never
    collapses to [0, 0] at zero events as the bootstrap does."""
    lo, hi = proportion_ci(values, prompts)
    return {"mean": float(values.mean()) if values.size else float("nan"), "ci95": [lo, hi],
            "ci_method": PROPORTION_METHOD}


def _pdr(ya: np.ndarray, yb: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    """1 - sum Y(b) / sum Y(a), with a prompt-level bootstrap CI (a resample with sum Y(a) = 0 has none)."""
    if ya.sum() == 0:
        return {"value": float("nan"), "ci95": [float("nan"), float("nan")], "reason": NO_PDR_REASON}
    value = float(1.0 - yb.sum() / ya.sum())
    ids, inv = np.unique(prompts.astype(str), return_inverse=True)
    sa, sb = np.bincount(inv, weights=ya, minlength=ids.size), np.bincount(inv, weights=yb, minlength=ids.size)
    if ids.size < 2:
        return {"value": value, "ci95": [float("nan"), float("nan")]}

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        k = idx.astype(np.intp)
        den = sa[k].sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 1.0 - sb[k].sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)

    with warnings.catch_warnings():
        # A resample without a correct side a has no drop rate (NaN): scipy then warns and returns no interval,
        # which the row says (ci_note) instead of dropping those resamples and narrowing the interval.
        warnings.simplefilter("ignore", _ss.DegenerateDataWarning)
        res = _ss.bootstrap((np.arange(ids.size),), statistic, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
                            method="percentile", confidence_level=expanded_level(CONFIDENCE, ids.size),
                            rng=np.random.default_rng(BOOTSTRAP_SEED))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out: dict[str, Any] = {"value": value, "ci95": [lo, hi]}
    if np.isnan(lo):
        out["ci_note"] = "some resamples had no correct side-a answer; no interval"
    return out


def _per_prompt(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt ids, PromptSensiScore per prompt, spread per prompt) over pairs with both sides known."""
    rows = []
    for pid, gp in g.groupby("prompt_id", sort=True):
        flips = np.abs(gp["correct_a"].to_numpy(float) - gp["correct_b"].to_numpy(float))
        ys = np.concatenate([gp["correct_a"].to_numpy(float)[:1], gp["correct_b"].to_numpy(float)])
        rows.append((str(pid), float(flips.mean()), float(ys.max() - ys.min())))
    if not rows:
        return np.array([], dtype=str), np.array([]), np.array([])
    ids, pss, spread = zip(*rows)
    return np.asarray(ids), np.asarray(pss), np.asarray(spread)


def answer_table(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model x variant x rung x length with answers: accuracies, flip rate, PSS, spread, PDR (prompt-level CIs)."""
    out: list[dict[str, Any]] = []
    if pairs.empty or any(c not in pairs.columns for c in ANSWER_COLUMNS):
        return out
    for (model, variant, rung, length), g in pairs.groupby(["model", "variant", "rung", "length"], sort=False):
        ya_all, yb_all = g["correct_a"].to_numpy(float), g["correct_b"].to_numpy(float)
        known = ~np.isnan(ya_all) & ~np.isnan(yb_all)
        if not (~np.isnan(ya_all)).any() and not (~np.isnan(yb_all)).any():
            continue  # no pair of this cell has an expected answer
        base = {"model": model, "variant": variant, "rung": rung, "length": int(length)}
        one_side = int((~known & (~np.isnan(ya_all) | ~np.isnan(yb_all))).sum())
        if not known.any():
            out.append({**base, "n_prompts": 0, "n_pairs": 0, "n_pairs_one_side_missing": one_side,
                        "note": "no pair has a correctness on both sides (side b's task changed without an expected "
                                "answer, or no answer span)"})
            continue
        both = g[known]
        prompts = both["prompt_id"].astype(str).to_numpy()
        ya, yb = ya_all[known], yb_all[known]
        ids, pss, spread = _per_prompt(both)
        row: dict[str, Any] = {
            **base, "n_prompts": int(len(set(prompts))), "n_pairs": int(known.sum()),
            # Pairs with an expected answer on a side but no correctness on the other (no answer span, or a
            # task-changing rung without an answer for side b): counted, left out of every number below.
            "n_pairs_one_side_missing": one_side,
            "accuracy_a": _share_ci(ya, prompts), "accuracy_b": _share_ci(yb, prompts),
            "flip_rate": _share_ci(np.abs(ya - yb), prompts),
            "flips_a_to_b": {"right_to_wrong": int(((ya == 1) & (yb == 0)).sum()),
                             "wrong_to_right": int(((ya == 0) & (yb == 1)).sum())},
            "pss": _mean_ci(pss, ids), "spread": _mean_ci(spread, ids),
            "pdr": _pdr(ya, yb, prompts),
        }
        out.append(row)
    out.sort(key=lambda r: (r["model"], r["variant"], rung_order(r["rung"]), r["length"]))
    return out


def _base_correctness(pairs: pd.DataFrame) -> pd.DataFrame:
    """Correctness of each base prompt's own output (side a of its identical pair) per model x variant x length."""
    ident = pairs[(pairs["rung"] == NOISE_FLOOR)]
    return ident[["model", "variant", "length", "prompt_id", "correct_a"]].dropna(subset=["correct_a"]).drop_duplicates(
        subset=["model", "variant", "length", "prompt_id"])


def _output_correctness(pairs: pd.DataFrame) -> pd.DataFrame:
    """Correctness of every decoded prompt (base and edited, each once) per model x variant x length.

    A prompt key takes its value from a pair where it is side a (its own base prompt) when there is one,
    else from the first pair where it is side b; ``prompt_id`` is that pair's base prompt (the CI's unit).
    """
    cols = ["model", "variant", "length", "prompt_id"]
    a = pairs[cols + ["prompt_key_a", "correct_a"]].rename(columns={"prompt_key_a": "key", "correct_a": "y"})
    b = pairs[cols + ["prompt_key_b", "correct_b"]].rename(columns={"prompt_key_b": "key", "correct_b": "y"})
    both = pd.concat([a, b], ignore_index=True).dropna(subset=["y"])
    return both.drop_duplicates(subset=["model", "variant", "length", "key"], keep="first")


def _flip_counts(y: np.ndarray, y_ref: np.ndarray, prompts: np.ndarray) -> dict[str, Any]:
    return {"flips": _share_ci(np.abs(y - y_ref), prompts),
            "right_to_wrong": int(((y_ref == 1) & (y == 0)).sum()), "wrong_to_right": int(((y_ref == 0) & (y == 1)).sum())}


def dutta_flips(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model x variant x length: share of base prompts whose correctness differs from the reference's (Dutta)."""
    out: list[dict[str, Any]] = []
    if pairs.empty or "correct_a" not in pairs.columns:
        return out
    base = _base_correctness(pairs)
    outputs = _output_correctness(pairs) if {"prompt_key_a", "prompt_key_b"} <= set(pairs.columns) else None
    present = {m: set(g["variant"].astype(str)) for m, g in base.groupby("model")}
    for (model, variant, length), g in base.groupby(["model", "variant", "length"], sort=True):
        ref = reference_of(str(variant), present[model])
        if ref == variant:
            continue
        r = base[(base["model"] == model) & (base["variant"] == ref) & (base["length"] == length)]
        if r.empty:
            continue
        m = g.merge(r, on="prompt_id", suffixes=("", "_ref"))
        if m.empty:
            continue
        y, y_ref = m["correct_a"].to_numpy(float), m["correct_a_ref"].to_numpy(float)
        prompts = m["prompt_id"].astype(str).to_numpy()
        row = {"model": model, "variant": variant, "reference": ref, "length": int(length), "n_prompts": int(len(m)),
               **_flip_counts(y, y_ref, prompts),
               "accuracy": float(y.mean()), "accuracy_reference": float(y_ref.mean()),
               "accuracy_change": float(y.mean() - y_ref.mean())}
        if outputs is not None:
            # Every decoded prompt with an expected answer (edited prompts too), each once; the unit of the
            # interval is still its base prompt.
            mine = outputs[(outputs["model"] == model) & (outputs["length"] == length)]
            mo = mine[mine["variant"] == variant].merge(mine[mine["variant"] == ref], on="key", suffixes=("", "_ref"))
            yo, yo_ref = mo["y"].to_numpy(float), mo["y_ref"].to_numpy(float)
            row["outputs"] = {"n_outputs": int(len(mo)), **_flip_counts(yo, yo_ref, mo["prompt_id"].astype(str).to_numpy())}
        out.append(row)
    return out
