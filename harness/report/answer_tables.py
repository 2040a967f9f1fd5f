"""Report tables of answer correctness (accuracy, flips, Dutta flips) and of teacher-forced drift.

Both renderers get them through harness.report.markdown.report_tables; the
terminal lines through terminal_summary. This module imports nothing from
markdown (the shared formatters live in harness.report.text), so the two do
not import each other.
"""

from __future__ import annotations

from typing import Any

from harness.report.records import Table
from harness.report.text import fmt, pct as _pct


def _ci_cell(s: dict[str, Any] | None, pct: bool = True) -> str:
    if not s:
        return "-"
    show = _pct if pct else fmt
    lo, hi = (s.get("ci95") or [None, None])[:2]
    ci = "" if lo is None or hi is None or lo != lo else f" [{show(lo)}, {show(hi)}]"
    return f"{show(s.get('mean'))}{ci}"


def _sci(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


def tf_drift_report_table(summary: dict[str, Any]) -> Table:
    """Teacher-forced drift (summary["tf_drift"]) beside the free-running D and the Dutta flips."""
    free = {(r["model"], r["variant"], r["length"]): r.get("drift") for r in summary.get("drift") or []}
    flips = {(r["model"], r["variant"], r["length"]): r for r in summary.get("answer_flips") or []}
    rows = []
    for r in summary.get("tf_drift") or []:
        k = (r["model"], r["variant"], r["length"])
        lo, hi = r["kl_mean"]["ci95"]
        f = flips.get(k)
        rows.append([r["model"], str(r["variant"]) + (" (engine floor)" if r.get("engine_floor") else ""), r["reference"], str(r["length"]),
                     f"{r['n_prompts']} / {r['n_outputs']} / {r['positions']}",
                     _sci(r["kl_mean"]["mean"]) + ("" if lo != lo else f" [{_sci(lo)}, {_sci(hi)}]"),
                     _sci(r["kl_median"]), _sci(r["kl_p99"]), _sci(r["kl_max"]), _ci_cell(r["same_top1"], pct=True),
                     f"{r['dp_mean']['mean']:+.4f}",
                     f"{_sci(r['first_top1_diff_median'])} ({r['outputs_top1_changed']}/{r['n_outputs']})",
                     fmt(free.get(k)), "-" if f is None else _ci_cell(f["flips"])])
    return Table("tf_drift", "Teacher-forced drift: each variant read on its reference's greedy tokens",
                 ["model", "variant", "reference", "L", "base prompts / outputs / positions", "mean KLD [95% CI]", "median KLD",
                  "p99 KLD", "max KLD", "same top-1", "mean Δp(ref token)", "first top-1 change: median step (outputs)",
                  "free-running D", "answer flips"],
                 rows,
                 note=("KLD = KL(p_reference ‖ p_variant) per generated position, nats, both models fed the prompt and "
                       "the reference's greedy output (llama.cpp --kl-divergence); statistics pool every position of "
                       "every prompt, CIs resample base prompts. Same top-1: share of positions where both models' "
                       "argmax agree. Δp: p_variant − p_reference of the reference's token. First top-1 change: 1-based "
                       "step, over the outputs (base and edited prompts) where it happens. Free-running D saturates after the first changed token; "
                       "this does not. Answer flips: share of base prompts whose correctness differs (Dutta)."),
                 empty="no variant next to its reference (run with --variants bf16,int8,int4)")


def answer_tables(summary: dict[str, Any]) -> list[Table]:
    """Accuracy and correctness flips per rung (summary["answers"]), and flips of each variant vs its reference."""
    rows = summary.get("answers") or []
    flips = summary.get("answer_flips") or []

    def pdr(r: dict[str, Any]) -> str:
        d = r["pdr"]
        if d.get("reason"):
            return "undefined (no correct side a)"
        lo, hi = d["ci95"]
        return f"{fmt(d['value'])}" + ("" if lo != lo else f" [{fmt(lo)}, {fmt(hi)}]")

    return [
        Table("answers", "Answers: accuracy and correctness flips per rung",
              ["model", "variant", "rung", "L", "prompts / pairs", "accuracy a", "accuracy b", "flip rate [95% CI]",
               "PSS", "spread", "PDR", "right→wrong / wrong→right"],
              [[r["model"], str(r["variant"]), r["rung"], str(r["length"]), f"{r['n_prompts']} / {r['n_pairs']}",
                _ci_cell(r["accuracy_a"]), _ci_cell(r["accuracy_b"]), _ci_cell(r["flip_rate"]), fmt(r["pss"]["mean"]),
                fmt(r["spread"]["mean"]), pdr(r),
                f"{r['flips_a_to_b']['right_to_wrong']} / {r['flips_a_to_b']['wrong_to_right']}"]
               if r["n_pairs"] else
               [r["model"], str(r["variant"]), r["rung"], str(r["length"]), "0 / 0", "-", "-", "-", "-", "-", "-",
                f"({r['n_pairs_one_side_missing']} pairs: {r['note']})"] for r in rows],
              note=("Y = 1 when a side's answer span passes its prompt's check (exact, contains, regex, number, choice). "
                    "Flip rate: share of pairs with Y(a) ≠ Y(b); PSS (ProSA): per base prompt the mean |Y(a) − Y(b)|, "
                    "averaged over prompts; spread (FormatSpread): per prompt max − min of Y over its variants; "
                    "PDR (PromptBench): 1 − ΣY(b)/ΣY(a). Accuracy and flip-rate intervals are Agresti-Coull at the "
                    "prompt-clustered effective n (never [0, 0] at zero events); PSS, spread and PDR CIs resample base "
                    "prompts. Pairs without an expected answer "
                    "or an answer span on a side are left out (counted in summary.json: n_pairs_one_side_missing)."),
              empty="no prompt carries an expected answer (add `answer` and `check` to the ladder's base prompts)"),
        Table("answer_flips", "Answers: flips of each variant against its reference (Dutta et al. 2024)",
              ["model", "variant", "reference", "L", "prompts", "flips [95% CI]", "right→wrong", "wrong→right",
               "accuracy (ref → variant)", "all answered outputs: flips (right→wrong / wrong→right)"],
              [[r["model"], str(r["variant"]), r["reference"], str(r["length"]), str(r["n_prompts"]), _ci_cell(r["flips"]),
                str(r["right_to_wrong"]), str(r["wrong_to_right"]),
                f"{_pct(r['accuracy_reference'])} → {_pct(r['accuracy'])}",
                "-" if not r.get("outputs") else
                f"{_ci_cell(r['outputs']['flips'])} of {r['outputs']['n_outputs']} "
                f"({r['outputs']['right_to_wrong']} / {r['outputs']['wrong_to_right']})"] for r in flips],
              note="Per base prompt (its own output): does the variant's answer pass the check where the reference's "
                   "does, and vice versa? Flips can be high while accuracy is unchanged. The last column counts every "
                   "decoded prompt with an expected answer (edited prompts too, each once; CI over base prompts).",
              empty="no variant with answers next to its reference"),
    ]


def terminal_answers(summary: dict[str, Any]) -> list[str]:
    """Accuracy and correctness flip rate per rung at the longest length; teacher-forced KLD and Dutta flips per variant."""
    rows = [r for r in summary.get("answers") or [] if r.get("n_pairs")]
    out: list[str] = []
    if rows:
        L = max(r["length"] for r in rows)
        out += [f"answers at L={L}: accuracy of side a -> side b, correctness flip rate (pairs)"]
        mw = max(len(r["model"]) for r in rows) + 2
        vw = max(len(str(r["variant"])) for r in rows) + 2
        for r in rows:
            if r["length"] == L:
                out.append(f"  {r['model']:<{mw}}{r['variant']:<{vw}}{r['rung']:<18}{_pct(r['accuracy_a']['mean']):>5} -> "
                           f"{_pct(r['accuracy_b']['mean']):<5} flips {_pct(r['flip_rate']['mean']):>4} ({r['n_pairs']})")
    flips = {(r["model"], r["variant"], r["length"]): r for r in summary.get("answer_flips") or []}
    for t in summary.get("tf_drift") or []:
        f = flips.get((t["model"], t["variant"], t["length"]))
        out.append(f"teacher-forced {t['model']} {t['variant']} vs {t['reference']} L={t['length']}: mean KLD "
                   f"{t['kl_mean']['mean']:.3g} (median {t['kl_median']:.3g}, p99 {t['kl_p99']:.3g}, max {t['kl_max']:.3g}), "
                   f"same top-1 {t['same_top1']['mean']:.1%}"
                   + ("" if f is None else f", answer flips {_pct(f['flips']['mean'])} of {f['n_prompts']} prompts")
                   + ("" if f is None or not f.get("outputs") else
                      f" ({f['outputs']['flips']['mean']:.1%} of {f['outputs']['n_outputs']} answered outputs)"))
    return out
