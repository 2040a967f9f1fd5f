"""Report sections of issue 36: where the variance comes from (summary.json ``variance``: a table and one figure)
and whether the ranking survives (``ranking``: a table, shown when the run has two model x variants or more).

Kept apart from harness.report.markdown: its report_tables places them, html.py draws the figure after the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure

from harness.report.figures import _png, not_drawn
from harness.report.records import Figure, Table
from harness.report.text import pct

_WHAT = {"prompt": "base prompt", "rung": "rung", "model": "model", "variant": "variant",
         "engine": "engine", "residual": "residual (the pair: its edit kind, edit x prompt x model)"}


def _num(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


def _ci(lo_hi: list | None, show=_num) -> str:
    lo, hi = (lo_hi or [None, None])[:2]
    return "" if lo is None or hi is None or lo != lo or hi != hi else f" [{show(lo)}, {show(hi)}]"


def variance_section(summary: dict[str, Any]) -> Table:
    rows: list[list[str]] = []
    for r in summary.get("variance") or []:
        head = [f"`{r['outcome']}` ({r['what']})", str(r["length"]), f"{r.get('n_prompts', 0)} / {r.get('n_pairs', 0)}"]
        if r.get("not_computed"):
            rows.append([*head, "-", "-", "-", f"not computed: {r['not_computed']}"])
            continue
        for c in r["components"]:
            note = f"estimate {_num(c['estimate'])} < 0, shown as 0" if c.get("truncated") else ""
            levels = r["levels"].get(c["factor"])
            rows.append([*head, _WHAT.get(c["factor"], c["factor"]) + (f" ({levels} levels)" if levels else ""),
                         _num(c["variance"]) + _ci(c["ci95"]), pct(c["share"]) + _ci(c["share_ci95"], pct), note])
        nz = r["noise"]
        rows.append([*head, f"noise floor (identical rung, {nz['n_pairs']} pairs; inside the residual)",
                     _num(nz["variance"]) + _ci(nz["ci95"]), pct(nz["share"]) + _ci(nz["share_ci95"], pct),
                     "0: every identical pair has the same value" if nz["variance"] == 0 else ""])
        for f, why in (r.get("left_out") or {}).items():
            rows.append([*head, _WHAT.get(f, f), "-", "-", why])
    return Table("variance", "Where the variance comes from (variance components, share of the total)",
                 ["outcome", "L", "prompts / pairs", "factor", "variance [95% CI]", "share [95% CI]", "note"], rows,
                 note=("Pairs of the rungs that perturb without changing the task; additive crossed random effects "
                       "fitted by Henderson's method III (moments, unbalanced data); shares of the sum of the components. "
                       "Intervals resample base prompts (percentile), so they hold the rungs, models and variants fixed. "
                       "correct_b: whether side b's answer is right (0/1). The noise floor is the identical rung's "
                       "variance (distance: pooled within model × variant; correctness: (a − b)² / 2), part of the "
                       "residual: the rest of the residual is pair-specific, not noise. A factor with one level, or "
                       "whose level another factor fixes, is left out and said, never shown as 0."),
                 empty="not computed: no pairs of a task-keeping perturbation rung")


def _pairs_cell(r: dict[str, Any]) -> str:
    return "; ".join(f"{p['a']} vs {p['b']}: {pct(p['p_same'])} ({p['verdict']})" for p in r.get("pairs", []))


def ranking_rows(rows: list[dict[str, Any]], lead: tuple[str, ...] = ("length",)) -> list[list[str]]:
    """Display rows of ranking records (summary.json ``ranking`` or compare's), ``lead`` columns first."""
    out = []
    for r in rows:
        head = [str(r.get(k, "-")) for k in lead] + [r["rung"], r["measure"], f"{r['n_prompts']} / {r['n_pairs']}"]
        if r.get("not_computed"):
            out.append([*head, "-", "-", "-", f"not computed: {r['not_computed']}"])
            continue
        tau = "-" if r["tau"] != r["tau"] else f"{r['tau']:+.2f}"
        ci = _ci(r["tau_ci95"], lambda x: f"{x:+.2f}")
        und = f"; undefined in {pct(r['tau_undefined'])}" if r.get("tau_undefined") else ""
        out.append([*head, " > ".join(r["original_order"]), " > ".join(r["perturbed_order"]), f"{tau}{ci}{und}",
                    _pairs_cell(r)])
    return out


RANKING_HEADER = ["rung", "measure", "prompts / pairs", "order on originals (best first)", "order perturbed",
                  "Kendall τ [95% CI]", "P(same order) per two (verdict)"]
RANKING_NOTE = ("accuracy: original = accuracy on side a of the rung's pairs (the base prompts), perturbed = on side b "
                "(the edited prompts); distance (lower first): original = mean distance over the other perturbation "
                "rungs pooled (there is no distance on an unedited prompt), perturbed = this rung's. Over the pair ids "
                "every unit scored, each base prompt once. P(same order): share of 1,000 base-prompt resamples where "
                "the two orders agree (holds ≥ 95%; flips: reversed in ≥ 95%; else uncertain). τ: Kendall's tau-b "
                "between the original and perturbed scores (±1 with two units), percentile interval over the "
                "resamples.")


def ranking_section(summary: dict[str, Any]) -> Table:
    rows = summary.get("ranking") or []
    return Table("ranking", "Does the ranking survive? Per rung, the order of the model × variants on original "
                            "and perturbed prompts", ["L", *RANKING_HEADER], ranking_rows(rows),
                 note=RANKING_NOTE,
                 bold_rows={i for i, r in enumerate(rows) if any(p["verdict"] == "flips" for p in r.get("pairs", []))},
                 empty="one model × variant: nothing to rank")


def variance_report_tables(summary: dict[str, Any]) -> list[Table]:
    """The two sections (ranking only when the summary has rows for it)."""
    tables = [variance_section(summary)] if "variance" in summary else []
    if summary.get("ranking"):
        tables.append(ranking_section(summary))
    return tables


def fig_variance(summary: dict[str, Any]) -> Figure:
    key, title = "fig_variance", "Share of the variance per factor, with 95% intervals resampling base prompts"
    rows = [r for r in summary.get("variance") or [] if r.get("components")]
    if not rows:
        return not_drawn(key, title, "no variance decomposition (no pairs of a task-keeping perturbation rung)")
    factors = [f for f in _WHAT if any(c["factor"] == f for r in rows for c in r["components"])] + ["noise"]
    fig = MplFigure(figsize=(9, 0.6 + 0.45 * len(factors) * len(rows)))
    ax = fig.subplots()
    height = 0.8 / len(rows)
    for k, r in enumerate(rows):
        comp = {c["factor"]: c for c in r["components"]}
        comp["noise"] = r["noise"]
        ys, xs, lo, hi = [], [], [], []
        for i, f in enumerate(factors):
            c = comp.get(f)
            if c is None or c["share"] != c["share"]:
                continue
            ys.append(i - 0.4 + height * (k + 0.5))
            xs.append(c["share"])
            a, b = c.get("share_ci95") or [np.nan, np.nan]
            lo.append(c["share"] - a if a == a else 0.0)
            hi.append(b - c["share"] if b == b else 0.0)
        ax.barh(ys, xs, height=height * 0.9, xerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]), capsize=3,
                label=f"{r['outcome']} ({r['what']}), L={r['length']}")
    ax.set_yticks(range(len(factors)), [_WHAT.get(f, "noise floor (identical rung)").split(" (the pair")[0] for f in factors])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the total variance")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    left = sorted({f for r in rows for f in (r.get("left_out") or {})})
    return Figure(key, title, "Henderson method III components of the task-keeping perturbation rungs' pairs, as shares "
                              "of their sum; the noise floor (identical rung) is part of the residual. "
                              + (f"Left out (one level or fixed by another factor): {', '.join(left)}." if left else ""),
                  _png(fig))
