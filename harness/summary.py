"""Run-level aggregates from the parquet tables alone (so `stabprobe report` can rebuild them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import RUNGS

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261121
METRICS = ("emb_dist", "tok_edit_norm", "hidden_dist", "js", "top1_flip")


def bootstrap_ci(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean, from a fixed seed (same data -> same interval)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if v.size == 1 or np.all(v == v[0]):
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def cell_stats(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean and CI of each metric per model x variant x rung x length."""
    out = []
    if pairs.empty:
        return out
    for (model, variant, rung, length), g in pairs.groupby(["model", "variant", "rung", "length"], sort=False):
        row: dict[str, Any] = {"model": model, "variant": variant, "rung": rung, "length": int(length), "n_pairs": int(len(g))}
        for m in METRICS:
            vals = g[m].astype(float).to_numpy()
            lo, hi = bootstrap_ci(vals)
            row[m] = {"mean": float(np.mean(vals)), "ci95": [lo, hi]}
        row["diverged_share"] = float((g["first_div"] > 0).mean())
        out.append(row)
    order = {r: i for i, r in enumerate(RUNGS)}
    out.sort(key=lambda r: (r["model"], r["variant"], order.get(r["rung"], 99), r["length"]))
    return out


def audit_counts(audit: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    if audit.empty:
        return out
    order = {r: i for i, r in enumerate(RUNGS)}
    for (model, rung), g in audit.groupby(["model", "rung"], sort=False):
        reasons = g.loc[~g["kept"], "reason"].value_counts().to_dict()
        out.append({"model": model, "rung": rung, "total": int(len(g)), "kept": int(g["kept"].sum()),
                    "dropped": {str(k): int(v) for k, v in reasons.items()}})
    out.sort(key=lambda r: (r["model"], order.get(r["rung"], 99)))
    return out


def determinism_verdict(pairs: pd.DataFrame) -> dict[str, Any]:
    """The identical rung is the run's determinism check: every metric must be exactly 0 there."""
    ident = pairs[pairs["rung"] == "identical"] if not pairs.empty else pairs
    if ident.empty:
        return {"verdict": "unknown", "identical_rows": 0, "nonzero_rows": 0, "detail": "no identical-rung pairs scored"}
    cols = ["emb_dist", "tok_edit", "hidden_dist", "js", "kl_ab", "kl_ba", "first_div"]
    nonzero = (ident[cols].astype(float) != 0).any(axis=1) | ident["top1_flip"].astype(bool)
    bad = ident[nonzero]
    return {
        "verdict": "deterministic" if bad.empty else "nondeterministic",
        "identical_rows": int(len(ident)),
        "nonzero_rows": int(len(bad)),
        "nonzero_pairs": sorted({f"{r.model}/{r.variant}/{r.pair_id}" for r in bad.itertuples()})[:50],
    }


def positive_vs_noop(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sanity check per model x variant x length: the positive control must move more than no-op edits."""
    out = []
    idx = {(c["model"], c["variant"], c["rung"], c["length"]): c for c in cells}
    for (model, variant, rung, length), c in idx.items():
        if rung != "positive_control":
            continue
        noop = idx.get((model, variant, "noop_format", length))
        if noop is None:
            continue
        pos_m, noop_m = c["emb_dist"]["mean"], noop["emb_dist"]["mean"]
        out.append({"model": model, "variant": variant, "length": length, "positive_control": pos_m,
                    "noop_format": noop_m, "holds": bool(pos_m > noop_m)})
    return out


def build_summary(pairs: pd.DataFrame, audit: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, Any]:
    cells = cell_stats(pairs)
    return {
        "schema_version": 1,
        "run": {"status": manifest.get("status"), "command": manifest.get("command"),
                "ladder": manifest.get("config", {}).get("ladder", {}).get("name")},
        "determinism": determinism_verdict(pairs),
        "models": [{"name": m["name"], "variant": m.get("variant"), "status": m["status"], "error": m.get("error")}
                   for m in manifest.get("models", [])],
        "audit": audit_counts(audit),
        "cells": cells,
        "checks": {"positive_control_exceeds_noop": positive_vs_noop(cells)},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "method": "percentile"},
    }
