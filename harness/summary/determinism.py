"""The run's determinism verdict, read off the identical rung.

Under deterministic greedy decoding both sides of an identical pair are the
same token for token, so every divergence metric is exactly 0 there; any
non-zero value means the decode (kernels, batching, hardware) is not
reproducible and every other number in the run carries that noise.

A NaN there (non-finite logits or states) proves nothing either way: the
verdict is then ``unknown``, never ``deterministic``. The answer-span columns
are the exception: they are NaN by construction when an output has no answer
span (an unclosed scaffold), which says nothing about reproducibility; so are the optional columns (the twin
divergence) in a cell that cannot compute them (another engine).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.ladder.records import NOISE_FLOOR
from harness.score.registry import answer_span_columns, determinism_columns, optional_columns

VERDICTS = ("deterministic", "nondeterministic", "unknown")


def _verdict(nonzero: pd.Series, unknown: pd.Series) -> str:
    if nonzero.any():
        return "nondeterministic"
    return "unknown" if unknown.any() else "deterministic"


def determinism_verdict(pairs: pd.DataFrame) -> dict[str, Any]:
    ident = pairs[pairs["rung"] == NOISE_FLOOR] if not pairs.empty else pairs
    if ident.empty:
        return {"verdict": "unknown", "identical_rows": 0, "nonzero_rows": 0, "nan_rows": 0, "nonzero_pairs": [],
                "detail": "no identical-rung pairs scored"}
    cols = [c for c in determinism_columns() if c in ident.columns]
    values = ident[cols].astype(float)
    nonzero = (values.fillna(0.0) != 0).any(axis=1)
    strict = [c for c in cols if c not in answer_span_columns() and c not in optional_columns()]
    unknown = values[strict].isna().any(axis=1)
    bad = ident[nonzero]
    keys = [ident["model"], ident["variant"]]
    per_model = {f"{m}/{v}": _verdict(nz, unknown.loc[nz.index]) for (m, v), nz in nonzero.groupby(keys)}
    return {
        "verdict": _verdict(nonzero, unknown),
        "identical_rows": int(len(ident)),
        "nonzero_rows": int(len(bad)),
        "nan_rows": int((unknown & ~nonzero).sum()),
        "per_model": per_model,
        "nonzero_pairs": sorted({f"{r.model}/{r.variant}/{r.pair_id}" for r in bad.itertuples()})[:50],
        "nan_pairs": sorted({f"{r.model}/{r.variant}/{r.pair_id}" for r in ident[unknown & ~nonzero].itertuples()})[:50],
    }
