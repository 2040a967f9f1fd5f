"""Checks for outputs that cannot be findings: no answer, no response to the prompt, a loop.

Each of these makes a low distance mean "the probe saw nothing", not "stable":

- ``answer_span_missing``: a scaffold that never closed leaves no answer span,
  so answer-span distances are missing for that pair (never 0); when that is
  true of many pairs, the answer-span numbers describe few outputs;
- ``unresponsive``: the model barely reacts to its prompt. No reference variant
  is needed (``collapse`` is the same trap seen against a baseline): distinct
  outputs per base prompt, and the positive control against the model's own
  no-op formatting distance, per prompt with a bootstrap CI, plus an absolute
  floor (a positive control that moves less than that is not a positive control);
- ``no_task_signal``: the positive control does not move the output clearly
  more than invisible edits do, as a share of the positive control (relative
  gap, per prompt, with its CI): a chaotic model moves every output a lot, so
  its absolute gap can exclude 0 while the task plays no part;
- ``repetition_loop``: most outputs sit in a repeating n-gram cycle
  (harness.score.metrics.repetition);
- the scaffold flag's "common opening" counts only a preamble of real content
  (:func:`common_preamble_share`): a run of newlines or one token repeated
  is degeneration, not a scaffold.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import NEGATIVE_CONTROL, NOISE_FLOOR, POSITIVE_CONTROL
from harness.score.metrics.repetition import loop_mask, loop_share
from harness.summary.stats import cluster_bootstrap_ci

ANSWER_MISSING_SHARE = 0.2
"""Flag a model x variant when more than this share of its pairs at a length have no answer span."""
DIVERSITY_FLOOR = 0.5
"""Distinct outputs per base prompt below this: most different tasks got the same output."""
POSITIVE_FLOOR = 0.3
"""Mean positive-control embedding distance below this: outputs for different tasks are near-paraphrases
(the demo models give 0.70-0.75; a random-init Qwen3 0.11-0.17)."""
LOOP_SHARE = 0.5
"""An output is looping when at least this share of its tokens sits in a cycle; the model is flagged
when at least this share of its outputs loop."""
PREAMBLE_TOKENS = 8
NO_SIGNAL_GAP = 0.5
"""No task signal unless the relative gap (positive control minus no-op formatting, over the positive control, per
prompt) is clearly above this: the lower end of its 95% CI must reach it.

Why one half, from what the two controls measure: the positive control's distance is the model's reaction to any
edit of its prompt (what the invisible no-op edit measures) plus the effect of the task having changed; to first
order positive = reaction + task, so a relative gap above one half is exactly "the change of task moves the output
more than an edit that changes nothing does" -- below it most of what the positive control moves is the model's
reaction to any edit, the signature of a chaotic or untrained model. The same reading gives the noise floor's cut
(harness.summary.floor.FLOOR_SHARE). Checked by simulation on planted prompt-clustered data, no measured model
(tests/summary/test_floor_threshold.py): a task effect no larger than the reaction is flagged in every run at 16
and 36 prompts, one five times the reaction in none. Where a pair's distance is very variable (anywhere from 0 to
twice its mean) the per-prompt ratio is noisy and a model with a 5x task effect was flagged in 17-28% of runs: the
error falls on the side of a warning. Measured for the record, not used to set it: a random-init Qwen3 0.697 against
0.753 (relative gap 7%; issue 30) and, on tasks-small at L = 32, 0.40 [0.10, 0.80]; tiny-chat 0.87 [0.75, 0.97] and
SmolLM2-135M bf16 0.86 [0.79, 0.93] on the same ladder."""


def answer_missing_flags(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flag per model x variant whose worst length has more than ANSWER_MISSING_SHARE of pairs without an answer span."""
    by_len: dict[tuple[str, str, int], list[int]] = {}
    for c in cells:
        miss = c.get("answer_missing")
        if miss:
            acc = by_len.setdefault((c["model"], c["variant"], int(c["length"])), [0, 0])
            acc[0] += miss["count"]
            acc[1] += c["n_pairs"]
    flags = []
    per_model: dict[tuple[str, str], tuple[float, int, int, int]] = {}
    for (model, variant, length), (count, total) in sorted(by_len.items()):
        share = count / total if total else 0.0
        if share > per_model.get((model, variant), (-1.0,))[0]:
            per_model[(model, variant)] = (share, count, total, length)
    for (model, variant), (share, count, total, length) in sorted(per_model.items()):
        if share > ANSWER_MISSING_SHARE:
            flags.append({
                "flag": "answer_span_missing", "model": model, "variant": variant,
                "detail": (f"{model}: {count} of {total} pairs ({share:.0%}) at {length} tokens have no answer span "
                           f"(a scaffold never closed); answer-span distances are missing there, not 0. "
                           f"Use a longer --lengths or the thinking-off control (a -nothink variant)"),
                "values": {"length": length, "count": count, "pairs": total, "share": share},
            })
    return flags


def _base_keys(pairs: pd.DataFrame) -> dict[str, str]:
    """prompt_id -> prompt key of its base prompt (side A of its pairs; the identical rung's when present)."""
    out: dict[str, str] = {}
    for pid, g in pairs.groupby("prompt_id", sort=True):
        ident = g[g["rung"] == NOISE_FLOOR]
        src = ident if not ident.empty else g
        out[str(pid)] = str(src["prompt_key_a"].mode().iloc[0])
    return out


def unresponsive_table(pairs: pd.DataFrame, gens: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per model x variant x length: output diversity and positive control vs no-op formatting, with the verdict."""
    out: list[dict[str, Any]] = []
    if pairs.empty:
        return out
    first = gens[gens["replicate"] == 0] if gens is not None and not gens.empty else None
    for (model, variant), g in pairs.groupby(["model", "variant"], sort=True):
        base = _base_keys(g)
        ids_of: dict[str, tuple[int, ...]] = {}
        if first is not None:
            f = first[(first["model"] == model) & (first["variant"] == variant)]
            ids_of = {k: tuple(int(x) for x in v) for k, v in zip(f["prompt_key"], f["gen_ids"])}
        for length, gl in g.groupby("length", sort=True):
            L = int(length)
            outputs = [ids_of[k][:L] for k in base.values() if k in ids_of]
            diversity = len(set(outputs)) / len(outputs) if outputs else float("nan")
            per_prompt = gl[gl["rung"].isin((POSITIVE_CONTROL, NEGATIVE_CONTROL))].pivot_table(
                index="prompt_id", columns="rung", values="emb_dist", aggfunc="mean")
            pos = noop = gap = rel_gap = float("nan")
            lo = hi = rel_lo = rel_hi = float("nan")
            n = 0
            if {POSITIVE_CONTROL, NEGATIVE_CONTROL} <= set(per_prompt.columns):
                both = per_prompt.dropna()
                n = int(len(both))
                pos = float(gl.loc[gl["rung"] == POSITIVE_CONTROL, "emb_dist"].mean())
                noop = float(gl.loc[gl["rung"] == NEGATIVE_CONTROL, "emb_dist"].mean())
                if n:
                    diff = (both[POSITIVE_CONTROL] - both[NEGATIVE_CONTROL]).to_numpy(dtype=float)
                    gap = float(diff.mean())
                    lo, hi = cluster_bootstrap_ci(diff, both.index.astype(str).to_numpy())  # one value per prompt
                    moved = both[both[POSITIVE_CONTROL] > 0]
                    if len(moved):
                        # The gap as a share of the positive control, per prompt: scale-free, so a chaotic model
                        # whose every output moves a lot (large absolute gap CI above 0) is still caught.
                        rel = ((moved[POSITIVE_CONTROL] - moved[NEGATIVE_CONTROL]) / moved[POSITIVE_CONTROL]).to_numpy(float)
                        rel_gap = float(rel.mean())
                        rel_lo, rel_hi = cluster_bootstrap_ci(rel, moved.index.astype(str).to_numpy())
            reasons = []
            if diversity == diversity and diversity < DIVERSITY_FLOOR:
                reasons.append(f"{len(set(outputs))} distinct outputs for {len(outputs)} base prompts")
            if pos == pos and pos < POSITIVE_FLOOR:
                reasons.append(f"positive control moves only {pos:.3f} (< {POSITIVE_FLOOR})")
            if lo == lo and lo <= 0:
                reasons.append(f"positive control minus no-op formatting, per prompt: {gap:.3f} [95% CI {lo:.3f}, {hi:.3f}] "
                               "includes 0")
            checked = diversity == diversity or lo == lo
            no_signal = None if rel_lo != rel_lo else bool(rel_lo < NO_SIGNAL_GAP)  # None: too few prompts
            out.append({"model": model, "variant": variant, "length": L, "base_prompts": len(outputs),
                        "distinct_outputs": len(set(outputs)), "diversity": diversity,
                        POSITIVE_CONTROL: pos, NEGATIVE_CONTROL: noop, "gap": gap, "gap_ci95": [lo, hi], "gap_prompts": n,
                        "relative_gap": rel_gap, "relative_gap_ci95": [rel_lo, rel_hi], "no_task_signal": no_signal,
                        "unresponsive": bool(reasons) if checked else None, "reasons": reasons})
    return out


def unresponsive_flags(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag a model x variant whose check fails at the longest length it was scored at."""
    flags = []
    longest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in table:
        key = (r["model"], r["variant"])
        if key not in longest or r["length"] > longest[key]["length"]:
            longest[key] = r
    for (model, variant), r in sorted(longest.items()):
        if r["unresponsive"]:
            flags.append({"flag": "unresponsive", "model": model, "variant": variant,
                          "detail": (f"at {r['length']} tokens: " + "; ".join(r["reasons"])
                                     + ": low distances here mean the model ignores its prompt, not that it is stable"),
                          "values": {k: r[k] for k in ("length", "diversity", POSITIVE_CONTROL, NEGATIVE_CONTROL, "gap",
                                                       "gap_ci95")}})
    return flags


def no_signal_flags(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag a model x variant whose positive control does not clearly out-move invisible edits (longest length)."""
    longest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in table:
        key = (r["model"], r["variant"])
        if key not in longest or r["length"] > longest[key]["length"]:
            longest[key] = r
    flags = []
    for (model, variant), r in sorted(longest.items()):
        if r.get("no_task_signal"):
            lo, hi = r["relative_gap_ci95"]
            flags.append({"flag": "no_task_signal", "model": model, "variant": variant,
                          "detail": (f"at {r['length']} tokens the positive control ({r[POSITIVE_CONTROL]:.3f}) moves the "
                                     f"output little more than invisible edits ({r[NEGATIVE_CONTROL]:.3f}): relative gap "
                                     f"{r['relative_gap']:.0%} [95% CI {lo:.0%}, {hi:.0%}], not clearly above {NO_SIGNAL_GAP:.0%}; the outputs "
                                     "carry no task signal, so no distance of this model is about its prompts"),
                          "values": {k: r[k] for k in ("length", POSITIVE_CONTROL, NEGATIVE_CONTROL, "relative_gap",
                                                       "relative_gap_ci95")}})
    return flags


def loop_table(gens: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per model x variant: mean loop share and the share of outputs that loop."""
    if gens is None or gens.empty:
        return []
    out = []
    first = gens[gens["replicate"] == 0]
    for (model, variant), g in first.groupby(["model", "variant"], sort=True):
        shares = np.array([loop_share(ids) for ids in g["gen_ids"]], dtype=np.float64)
        ok = shares[~np.isnan(shares)]
        out.append({"model": model, "variant": variant, "outputs": int(len(shares)), "empty_outputs": int(np.isnan(shares).sum()),
                    "mean_loop_share": float(ok.mean()) if ok.size else float("nan"),
                    "looping_share": float((ok >= LOOP_SHARE).mean()) if ok.size else float("nan")})
    return out


def loop_flags(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"flag": "repetition_loop", "model": r["model"], "variant": r["variant"],
             "detail": (f"{r['looping_share']:.0%} of outputs spend at least {LOOP_SHARE:.0%} of their tokens in a repeating "
                        f"cycle (mean loop share {r['mean_loop_share']:.2f}): distances between loops say little about the prompt"),
             "values": {k: r[k] for k in ("outputs", "mean_loop_share", "looping_share")}}
            for r in table if r["looping_share"] == r["looping_share"] and r["looping_share"] >= LOOP_SHARE]


def _real_content(opening: tuple[int, ...], ids: tuple[int, ...], shared_text: str) -> bool:
    """A preamble is content: not whitespace, not one token repeated, not the start of a loop."""
    if len(set(opening)) < 2:
        return False
    if loop_mask(ids)[: len(opening)].mean() >= 0.5:
        return False
    return len(set(shared_text) - set(" \t\r\n\f\v")) >= 2


def common_preamble_share(g: pd.DataFrame) -> float:
    """Share of outputs (rows of one model x variant) opening with the most common real-content preamble."""
    groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], str]]] = {}
    for ids, text in zip(g["gen_ids"], g["gen_text"]):
        ids = tuple(int(x) for x in ids)
        if len(ids) >= PREAMBLE_TOKENS:
            groups.setdefault(ids[:PREAMBLE_TOKENS], []).append((ids, str(text)))
    counts = Counter({k: len(v) for k, v in groups.items()})
    for opening, count in counts.most_common():
        members = groups[opening]
        shared = os.path.commonprefix([t for _, t in members])
        if _real_content(opening, members[0][0], shared):
            return count / len(g) if len(g) else 0.0
    return 0.0
