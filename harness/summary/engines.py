"""Per model x variant: which engine chose the tokens, and how far the probe reproduced them.

Read from generations.parquet (the per-output agreement columns) and the
manifest (engine version, attention backend, batch invariance), so
``stabprobe report`` rebuilds it from the run directory alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def engine_table(gens: pd.DataFrame, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    records = {(m.get("name"), m.get("variant")): m for m in manifest.get("models", [])}
    out: list[dict[str, Any]] = []
    if gens.empty:
        return out
    for (model, variant), g in gens.groupby(["model", "variant"], sort=False):
        rec = records.get((model, variant), {})
        run = rec.get("engine") or {}
        engine = str(g["engine"].iloc[0]) if "engine" in g else "hf"
        capture = str(g["capture"].iloc[0]) if "capture" in g else "generate"
        row: dict[str, Any] = {
            "model": model, "variant": variant, "engine": engine, "capture": capture, "outputs": int(len(g)),
            "engine_version": run.get("version"), "attention_backend": run.get("attention_backend"),
            "batch_invariant": run.get("batch_invariant"), "probed": 0, "fully_agreeing": None,
            "steps": None, "agreeing_steps": None, "disagreeing_outputs": None, "min_margin_at_disagreement": None,
        }
        if capture == "probe" and "probe_agreement" in g:
            share = g["probe_agreement"].to_numpy(dtype=np.float64)
            steps = np.array([len(x) for x in g["trace_top1_id"]], dtype=np.int64)
            probed = ~np.isnan(share)
            dis = g.loc[probed & (share < 1.0), "probe_margin_at_disagreement"].to_numpy(dtype=np.float64)
            row.update(probed=int(probed.sum()), fully_agreeing=int((share[probed] == 1.0).sum()),
                       steps=int(steps[probed].sum()), agreeing_steps=int(np.rint(share[probed] * steps[probed]).sum()),
                       disagreeing_outputs=int(len(dis)),
                       min_margin_at_disagreement=float(np.nanmin(dis)) if len(dis) else None)
        out.append(row)
    return out
