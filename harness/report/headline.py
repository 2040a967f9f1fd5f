"""The answer first: per model × variant one stability figure, the determinism verdict, the traps that fired.

Built from summary.json (and which lengths add nothing, :mod:`harness.report.lengths`), rendered by
both report.html's first screen (:mod:`harness.report.page`) and ``stabprobe show`` (:mod:`harness.report.show`),
so the terminal and the page say the same sentences.

The stability figure is the mean embedding distance on the *headline rung*: the tightest perturbed
rung the run measured (``HEADLINE_RUNGS`` order; invisible formatting edits on the default ladder),
at the longest length that adds something. A model that moves more under an edit a reader cannot
see is the finding the harness exists for; the other rungs sit beside it in the table.
"""

from __future__ import annotations

import math
from typing import Any

from harness.ladder.records import NEGATIVE_CONTROL, NOISE_FLOOR, POSITIVE_CONTROL, RUNGS
from harness.report.records import Headline, HeadlineRow
from harness.report.text import fmt, mde_text

HEADLINE_RUNGS = tuple(r for r in RUNGS if r not in (NOISE_FLOOR, POSITIVE_CONTROL))
"""Perturbed rungs, tightest first: the first one a run measured is its headline rung."""

RUNG_WORDS = {
    NEGATIVE_CONTROL: "invisible formatting edits", "punctuation": "punctuation edits",
    "structural": "whitespace edits inside the prompt", "casing": "case changes", "format": "format changes",
    "typo": "typos", "synonym": "synonym swaps", "filler": "added filler words", "paraphrase": "paraphrases",
    "option_order": "reordered answer options", "semantic_small": "small real changes of the task",
    POSITIVE_CONTROL: "a different task", NOISE_FLOOR: "no change at all",
}
"""How a person says each rung."""

FLAG_WORDS = {
    "collapse": "collapse (moves less than its reference but drifts from it more than it moves)",
    "collapse_not_determined": "possible collapse (the pattern is there, the CIs do not decide)",
    "unresponsive": "unresponsive (its outputs hardly react to the prompt at all)",
    "scaffold": "scaffold (most outputs open with the same preamble: compare answer-span distances)",
    "answer_span_missing": "missing answer spans (the scaffold never closes: use longer --lengths)",
    "repetition_loop": "repetition loops",
    "confident_but_unstable": "confident but unstable",
    "nondeterministic": "not reproducible (the identical rung is not exactly 0)",
    "determinism_unknown": "reproducibility unknown (non-finite numbers on the identical rung)",
}


def _word(rung: str) -> str:
    return RUNG_WORDS.get(rung, rung.replace("_", " "))


def _comparison(summary: dict[str, Any], variant: str, rung: str, length: int, a: str, b: str) -> dict[str, Any] | None:
    for c in summary.get("clusters") or []:
        if (str(c["variant"]), c["rung"], c["length"]) == (variant, rung, length):
            for x in c["comparisons"]:
                if {x["a"], x["b"]} == {a, b}:
                    return x
    return None


def _ratio_sentence(summary: dict[str, Any], rung: str, length: int, rows: list[HeadlineRow]) -> list[str]:
    """Per variant with two models or more: the most-moving model against the least-moving one, and whether the test separates them."""
    out = []
    for variant in sorted({r.variant for r in rows}):
        mine = sorted((r for r in rows if r.variant == variant and not math.isnan(r.mean)), key=lambda r: r.mean)
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]
        where = f"under {_word(rung)}"
        at = f"{variant}, {length} tokens"
        if hi.mean == lo.mean:
            out.append(f"{hi.model} and {lo.model} move the same {where} ({hi.mean:.3f}; {at}).")
            continue
        how = (f"{hi.mean / lo.mean:.1f}× more than" if lo.mean > 0 else "while")
        verb = f"moves {how} {lo.model}" if lo.mean > 0 else f"moves ({hi.mean:.3f}) {how} {lo.model} does not move at all"
        s = f"{hi.model} {verb} {where} (" + (f"{hi.mean:.3f} vs {lo.mean:.3f}; " if lo.mean > 0 else "") + f"{at})"
        x = _comparison(summary, variant, rung, length, hi.model, lo.model)
        if x is None or x.get("p") is None:
            s += "; no test compares them."
        elif x["separated"]:
            s += f"; the paired test separates them (Holm p = {x['p_holm']:.3g}, {x.get('n_prompts', '?')} base prompts)."
        else:
            s += (f"; the paired test does not separate them (Holm p = {x['p_holm']:.3g}); with "
                  f"{x.get('n_prompts', '?')} base prompts the smallest difference it detects is {mde_text(x.get('mde'))}.")
        out.append(s)
    return out


def determinism_sentence(det: dict[str, Any]) -> str:
    """The run's determinism verdict as a person would say it."""
    v = det.get("verdict")
    n, bad = det.get("identical_rows", 0), det.get("nonzero_rows", 0)
    if v == "deterministic":
        return (f"Deterministic: every identical-rung pair, decoded twice in different batches, scored exactly 0 on "
                f"every metric ({n} rows), so every distance above 0 is the prompt edit's doing.")
    if v == "unknown":
        return (f"Reproducibility unknown: {det.get('nan_rows', 0)} of {n} identical-rung rows are NaN (non-finite "
                "numbers), so the noise floor is not known.")
    if not n:
        return "Determinism not checked: the run scored no identical-rung pairs."
    who = sorted(k for k, x in (det.get("per_model") or {}).items() if x != "deterministic")
    return (f"Not deterministic: {bad} of {n} identical-rung rows are non-zero ({', '.join(who) or 'see the table'}); "
            "distances on the other rungs include that much noise.")


def trap_sentences(summary: dict[str, Any]) -> list[str]:
    """One sentence per flag and per failed model."""
    out = []
    for f in summary.get("flags") or []:
        what = FLAG_WORDS.get(f["flag"], f["flag"].replace("_", " "))
        out.append(f"{f.get('model')} ({f.get('variant')}): {what}. {f.get('detail', '')}".rstrip())
    for m in summary.get("models") or []:
        if m.get("status") != "ok":
            out.append(f"{m['name']} ({m.get('variant')}) failed: {m.get('error') or m.get('status')}.")
    return out


def build_headline(summary: dict[str, Any], informative: list[int] | None = None) -> Headline:
    """The headline of a summary; ``informative``: the lengths that add something (default: all)."""
    cells = summary.get("cells") or []
    lengths = sorted({c["length"] for c in cells})
    if informative:
        lengths = [L for L in lengths if L in informative] or lengths
    rungs = [r for r in HEADLINE_RUNGS if any(c["rung"] == r for c in cells)]
    det = determinism_sentence(summary.get("determinism") or {})
    traps = trap_sentences(summary)
    if not rungs or not lengths:
        return Headline(None, None, [], ["No perturbed pair was scored, so there is no stability figure: see the "
                                         "audit and the failed models below."], det, traps, [])
    rung, length = rungs[0], lengths[-1]
    by = {(c["model"], str(c["variant"]), c["rung"], c["length"]): c for c in cells}
    rows = []
    for model, variant in sorted({(c["model"], str(c["variant"])) for c in cells}):
        c = by.get((model, variant, rung, length))
        if c is None or not c.get("emb_dist"):
            continue
        e = c["emb_dist"]
        others = {r: f"{fmt(by[(model, variant, r, length)]['emb_dist']['mean'])} "
                     f"{by[(model, variant, r, length)].get('cluster') or '-'}"
                  for r in rungs[1:] if (model, variant, r, length) in by and by[(model, variant, r, length)].get("emb_dist")}
        ci = e.get("ci95") or [float("nan"), float("nan")]
        rows.append(HeadlineRow(model, variant, float(e["mean"]), (float(ci[0]), float(ci[1])), c.get("cluster") or "-",
                                e.get("mde"), int(c.get("n_prompts") or 0), others))
    rows.sort(key=lambda r: (r.variant, r.mean))
    sentences = _ratio_sentence(summary, rung, length, rows)
    if len(rows) == 1:
        r = rows[0]
        sentences.append(f"{r.model} ({r.variant}) moves {r.mean:.3f} [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] under "
                         f"{_word(rung)} at {length} tokens ({r.n_prompts} base prompts); one model, so nothing to compare.")
    return Headline(rung, length, rows, sentences, det, traps, rungs[1:])


def headline_text(h: Headline) -> list[str]:
    """Plain lines (Markdown-free) for a terminal or a log."""
    lines = list(h.sentences) + [h.determinism]
    lines += [f"Trap: {t}" for t in h.traps] or ["No trap fired (no flag raised, no model failed)."]
    return lines
