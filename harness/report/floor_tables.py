"""Report table of the noise floor (harness.summary.floor): which variants' distances can be read at all.

Kept apart from harness.report.markdown so that the verdict sections of issue 30 sit in one place; markdown's
report_tables places it (and marks the drift rows of unmeasurable variants) through these two functions.
"""

from __future__ import annotations

from typing import Any

from harness.report.records import Table
from harness.report.text import fmt
from harness.summary.floor import FLOOR_SHARE


def unmeasurable_variants(floor: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """{(model, variant): short reason} of every model x variant unmeasurable at some length."""
    out: dict[tuple[str, str], str] = {}
    for r in floor:
        if r.get("verdict") == "unmeasurable":
            out.setdefault((str(r["model"]), str(r["variant"])),
                           f"floor {fmt(r.get('floor'))} vs perturbations {fmt(r.get('perturbed'))} (L={r['length']})")
    return out


def _ci(pair: list | None) -> str:
    lo, hi = (pair or [None, None])[:2]
    return "-" if lo is None or hi is None or lo != lo else f"[{fmt(lo)}, {fmt(hi)}]"


def noise_floor_table(floor: list[dict[str, Any]]) -> Table:
    return Table("noise_floor", "Noise floor (identical rung) against the perturbation rungs, per variant",
                 ["model", "variant", "L", "identical pairs non-zero", "floor [95% CI]", "perturbations",
                  "margin [95% CI]", f"perturbations - floor/{FLOOR_SHARE:g} [95% CI]", "missing", "verdict", "reason"],
                 [[r["model"], str(r["variant"]), str(r["length"]), f"{r['n_identical_nonzero']} / {r['n_identical']}",
                   f"{fmt(r['floor'])} {_ci(r.get('floor_ci95'))}", f"{fmt(r['perturbed'])} ({r['n_perturbed']} pairs)",
                   _ci(r.get("margin_ci95")), _ci(r.get("excess_ci95")), str(r.get("n_missing", 0)),
                   r["verdict"].upper() if r["verdict"] == "unmeasurable" else r["verdict"], r.get("reason", "")]
                  for r in floor],
                 note=("Embedding distance, means over base prompts. exact: every identical pair is 0; noisy: the floor "
                       f"is shown below {FLOOR_SHARE:.0%} of the perturbation distance (the 95% CI of perturbations - "
                       f"floor/{FLOOR_SHARE:g} above 0: the edits move the output more than the decode's own noise; "
                       "distances include the floor); UNMEASURABLE: the decode's own noise is not shown smaller than the "
                       "edits' effect, so this variant's "
                       "rung means, drift, KLD and answer flips are noise, not findings (left out of the drift figure; "
                       "`stabprobe gate` fails on it unless its file allows it)."),
                 bold_rows={i for i, r in enumerate(floor) if r["verdict"] == "unmeasurable"},
                 empty="no pairs were scored")
