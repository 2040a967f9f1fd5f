"""The run's determinism verdict, read off the identical rung.

Under deterministic greedy decoding both sides of an identical pair are the
same token for token, so every divergence metric is exactly 0 there; any
non-zero value means the decode (kernels, batching, hardware) is not
reproducible and every other number in the run carries that noise.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.score.pairs import DIVERGENCE_COLUMNS


def determinism_verdict(pairs: pd.DataFrame) -> dict[str, Any]:
    ident = pairs[pairs["rung"] == "identical"] if not pairs.empty else pairs
    if ident.empty:
        return {"verdict": "unknown", "identical_rows": 0, "nonzero_rows": 0, "nonzero_pairs": [],
                "detail": "no identical-rung pairs scored"}
    cols = [c for c in DIVERGENCE_COLUMNS if c in ident.columns]
    nonzero = (ident[cols].astype(float).fillna(0.0) != 0).any(axis=1) | ident["top1_flip"].astype(bool)
    bad = ident[nonzero]
    per_model = {
        f"{m}/{v}": ("deterministic" if not nz.any() else "nondeterministic")
        for (m, v), nz in nonzero.groupby([ident["model"], ident["variant"]])
    }
    return {
        "verdict": "deterministic" if bad.empty else "nondeterministic",
        "identical_rows": int(len(ident)),
        "nonzero_rows": int(len(bad)),
        "per_model": per_model,
        "nonzero_pairs": sorted({f"{r.model}/{r.variant}/{r.pair_id}" for r in bad.itertuples()})[:50],
    }
