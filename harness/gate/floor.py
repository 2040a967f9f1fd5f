"""The gate's noise-floor checks: one per model x variant, failing on a decode that is not reproducible.

A threshold checked on a variant whose identical pairs already differ compares the limit with noise (bitsandbytes
int8 on CPU passed 21 of 21 checks of the example config while 8 of 8 of its identical pairs differed; issue 30).
So before any threshold counts, each model x variant must have a readable floor (harness.summary.floor):
``exact`` passes; a non-zero identical pair (nondeterministic) or an ``unmeasurable`` floor fails, unless the gate
file lists the variant (or model/variant) under ``allow_unmeasurable``. A gate neighbourhood has one base prompt,
too few for the margin's interval, so in practice any non-zero identical pair fails: a gate needs a reproducible
decode or an explicit allowance. The gate's exit code is then ``EXIT_UNMEASURABLE``, not the threshold failure's.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from harness.gate.records import FAIL, PASS, GateCheck, ModelRun
from harness.summary.floor import EXACT, METRIC, floor_row

FLOOR_CHECK = "noise_floor"
"""``neighbourhood`` and ``metric`` of a floor check (JUnit testcase ``noise_floor: noise_floor <= 0``)."""


def floor_checks(pairs: pd.DataFrame, runs: Sequence[ModelRun], length: int, allow: Sequence[str]) -> list[GateCheck]:
    """One check per model x variant that ran: PASS on an exact floor (or an allowed variant), FAIL otherwise."""
    out = []
    for run in runs:
        if run.status != "ok":
            continue  # its threshold checks already fail with the model's error
        g = pairs[(pairs["model"] == run.model) & (pairs["variant"] == run.variant) & (pairs["length"] == length)]
        row = floor_row(run.model, run.variant, length, g)
        allowed = run.variant in allow or f"{run.model}/{run.variant}" in allow
        nonzero = row["n_identical_nonzero"]
        what = (f"{row['verdict']}: {nonzero} of {row['n_identical']} identical pairs non-zero, floor {METRIC} "
                f"{row['floor']:.4f} against {row['perturbed']:.4f} over the perturbed pairs")
        if row["verdict"] == EXACT:
            verdict, message = PASS, f"exact: all {row['n_identical']} identical pairs are 0"
        elif allowed:
            verdict, message = PASS, f"{what}; allowed by allow_unmeasurable"
        else:
            verdict = FAIL
            message = (f"{run.model}/{run.variant} is {'nondeterministic' if nonzero else row['verdict']} ({what}): "
                       "its thresholds compare noise; exclude it (`variants:`) or allow it (`allow_unmeasurable:`)")
        out.append(GateCheck(FLOOR_CHECK, run.model, run.variant, FLOOR_CHECK, 0.0, False, length,
                             float(row["floor"]) if row["floor"] == row["floor"] else None, None, None,
                             int(row["n_perturbed"]), int(row["n_perturbed"]), verdict, message))
    return out
