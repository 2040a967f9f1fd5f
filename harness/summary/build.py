"""summary.json: the one builder of the run's aggregates, from the parquet tables alone.

Statistics, clusters, audit counts, exposure, the determinism verdict (the
manifest copies it from here), flags, the drift table and scaffold shares:
`stabprobe run` and `stabprobe report RUN_DIR` both come through
:func:`build_summary`, so a rebuilt summary is the same as the original.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.audit.exposure import exposure_table
from harness.ladder.records import NEGATIVE_CONTROL, POSITIVE_CONTROL, rung_order
from harness.score.registry import summary_metrics
from harness.summary.determinism import determinism_verdict
from harness.summary.floor import floor_flags, floor_table
from harness.summary.collapse import collapse_flags, drift_table
from harness.summary.engines import engine_table
from harness.summary.flags import compute_flags, scaffold_table
from harness.summary.traps import (
    answer_missing_flags,
    loop_flags,
    loop_table,
    no_signal_flags,
    unresponsive_flags,
    unresponsive_table,
)
from harness.summary.answers import ANSWERS_VERSION, answer_table, dutta_flips
from harness.summary.tf_drift import tf_drift_table
from harness.summary.ranking import RANKING_VERSION, ranking_table
from harness.summary.variance import VARIANCE_VERSION, variance_table
from harness.summary.power import POWER, mde, prompt_sd
from harness.schema import SCHEMA_VERSION
from harness.summary.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    MIN_CI_PROMPTS,
    PERMUTATION_SEED,
    PERMUTATIONS,
    ci_note,
    cluster_bootstrap_ci,
    cluster_groups,
)

CLUSTER_METRIC = "emb_dist"
FAMILY = "all model pairs within one variant x rung x length"
"""The Holm family of the cluster tests; the error rate holds per family, not for the whole report."""
SPREAD_METRIC = "emb_dist"


def cell_mde(values: np.ndarray, prompts: np.ndarray) -> float:
    """Minimum detectable shift of a cell's mean at 80% power (harness.summary.power) from its per-prompt means."""
    if values.size == 0:
        return float("nan")
    ids, inv = np.unique(prompts, return_inverse=True)
    per_prompt = np.bincount(inv, weights=values, minlength=ids.size) / np.bincount(inv, minlength=ids.size)
    return mde(prompt_sd(per_prompt), int(ids.size))


def cell_stats(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean over pairs and its prompt-level CI of each aggregated metric per model x variant x rung x length.

    The metrics are the registry's with an aggregate (harness.score.registry.summary_metrics): a mean over
    the finite values, a bool's rate the same way.

    The CI resamples base prompts (harness.summary.stats.cluster_bootstrap_ci);
    ``n_prompts`` is the number of base prompts behind ``n_pairs``.
    """
    out = []
    if pairs.empty:
        return out
    metrics = [m for m in summary_metrics() if m in pairs.columns]  # a run from before a metric lacks its column
    for (model, variant, rung, length), g in pairs.groupby(["model", "variant", "rung", "length"], sort=False):
        prompts = g["prompt_id"].astype(str).to_numpy()
        row: dict[str, Any] = {"model": model, "variant": variant, "rung": rung, "length": int(length),
                               "n_prompts": int(len(set(prompts))), "n_pairs": int(len(g))}
        for m in metrics:
            vals = g[m].astype(float).to_numpy()
            ok = ~np.isnan(vals)
            finite = vals[ok]
            lo, hi = cluster_bootstrap_ci(finite, prompts[ok])
            row[m] = {"mean": float(np.mean(finite)) if finite.size else float("nan"), "ci95": [lo, hi],
                      "mde": cell_mde(finite, prompts[ok]),
                      # Counts over the finite values the mean is over (the row's n_pairs counts every pair).
                      "n_pairs": int(finite.size), "n_prompts": int(len(set(prompts[ok])))}
            note = ci_note(finite, prompts[ok])
            if note is not None:
                row[m]["ci_note"] = note
            if finite.size < vals.size:  # said, not hidden: the mean is over fewer pairs than n_pairs
                row[m]["n_missing"] = int(vals.size - finite.size)
        row["diverged_share"] = float((g["first_div"] > 0).mean())
        row["spread"] = prompt_spread(g)
        if "answer_missing" in g.columns:
            # Pairs whose answer-span metrics are missing (a side never closed its scaffold): the
            # answer-span means above are over the other pairs only.
            miss = g["answer_missing"].astype(bool)
            row["answer_missing"] = {"count": int(miss.sum()), "share": float(miss.mean())}
        out.append(row)
    out.sort(key=lambda r: (r["model"], r["variant"], rung_order(r["rung"]), r["length"]))
    return out


def prompt_spread(cell: pd.DataFrame, metric: str = SPREAD_METRIC) -> dict[str, Any]:
    """FormatSpread's spread on one rung: per base prompt, max − min of ``metric`` over its variants; mean over prompts.

    A prompt with fewer than two measured variants on the rung has no spread:
    it is counted (``n_prompts_one_variant``), not taken as 0. The CI
    resamples prompts (each prompt is one value).
    """
    per_prompt = cell[["prompt_id", metric]].dropna().groupby("prompt_id", sort=True)[metric].agg(["max", "min", "size"])
    several = per_prompt[per_prompt["size"] >= 2]
    spreads = (several["max"] - several["min"]).to_numpy(dtype=float)
    lo, hi = cluster_bootstrap_ci(spreads, several.index.to_numpy())  # one value per prompt
    return {"metric": metric, "mean": float(spreads.mean()) if spreads.size else float("nan"), "ci95": [lo, hi],
            "n_prompts": int(spreads.size), "n_prompts_one_variant": int(cell["prompt_id"].nunique() - spreads.size)}


def audit_counts(audit: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    if audit.empty:
        return out
    keys = ["model", "variant", "rung"] if "variant" in audit.columns else ["model", "rung"]
    for key, g in audit.groupby(keys, sort=False):
        reasons = g.loc[~g["kept"], "reason"].value_counts().to_dict()
        rec = dict(zip(keys, key))
        rec.setdefault("variant", "bf16")
        out.append({**rec, "total": int(len(g)), "kept": int(g["kept"].sum()),
                    "dropped": {str(k): int(v) for k, v in reasons.items()}})
    out.sort(key=lambda r: (r["model"], r["variant"], rung_order(r["rung"])))
    return out


def positive_vs_noop(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sanity check per model x variant x length: the positive control must move more than no-op edits."""
    out = []
    idx = {(c["model"], c["variant"], c["rung"], c["length"]): c for c in cells}
    for (model, variant, rung, length), c in idx.items():
        if rung != POSITIVE_CONTROL:
            continue
        noop = idx.get((model, variant, NEGATIVE_CONTROL, length))
        if noop is None:
            continue
        pos_m, noop_m = c["emb_dist"]["mean"], noop["emb_dist"]["mean"]
        out.append({"model": model, "variant": variant, "length": length, POSITIVE_CONTROL: pos_m,
                    NEGATIVE_CONTROL: noop_m, "holds": bool(pos_m > noop_m),
                    "n": {r: [x.get("n_prompts"), x["n_pairs"]] for r, x in ((POSITIVE_CONTROL, c), (NEGATIVE_CONTROL, noop))}})
    return out


def cluster_stats(pairs: pd.DataFrame, metric: str = CLUSTER_METRIC) -> list[dict[str, Any]]:
    """Per variant x rung x length: models compared on their shared pair ids, grouped by letters.

    The unit of each test is the base prompt (per-prompt mean differences over
    the shared pairs). One Holm family per cell: all model pairs of that
    variant, rung and length (``FAMILY``). Models that share a letter are
    not separated at ALPHA: the report shows clusters, never a ranking inside one.
    """
    out: list[dict[str, Any]] = []
    if pairs.empty:
        return out
    for (variant, rung, length), g in pairs.groupby(["variant", "rung", "length"], sort=False):
        values: dict[str, dict[str, float]] = {}
        prompt_of: dict[str, str] = dict(zip(g["pair_id"].astype(str), g["prompt_id"].astype(str)))
        for model, gm in g.groupby("model", sort=True):
            v = gm[["pair_id", metric]].dropna()
            if not v.empty:
                values[str(model)] = dict(zip(v["pair_id"].astype(str), v[metric].astype(float)))
        if not values:
            continue
        letters, comparisons = cluster_groups(values, prompt_of)
        out.append({
            "variant": variant, "rung": rung, "length": int(length), "metric": metric,
            "family_size": sum(c.pvalue is not None for c in comparisons),
            "models": [{"model": m, "letters": letters[m], "n_prompts": len({prompt_of[i] for i in values[m]}),
                        "n_pairs": len(values[m]), "mean": float(np.mean(list(values[m].values())))}
                       for m in sorted(values)],
            "comparisons": [{"a": c.a, "b": c.b, "n_shared": c.n_shared, "n_prompts": c.n_prompts,
                             "mean_diff": c.mean_diff if c.n_shared else None, "diff_ci95": list(c.diff_ci95),
                             "prompt_sd": c.prompt_sd, "mde": mde(c.prompt_sd, c.n_prompts) if c.n_shared else None,
                             "p": c.pvalue, "p_holm": c.pvalue_holm, "separated": c.separated}
                            for c in comparisons],
        })
    out.sort(key=lambda r: (r["variant"], rung_order(r["rung"]), r["length"]))
    return out


def _annotate_clusters(cells: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> None:
    letters = {(c["variant"], c["rung"], c["length"], m["model"]): m["letters"] for c in clusters for m in c["models"]}
    for cell in cells:
        cell["cluster"] = letters.get((cell["variant"], cell["rung"], cell["length"], cell["model"]), "")


def test_design(clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """How the cluster tests were made, and the multiplicity family with its size (printed in every report)."""
    sizes = [c.get("family_size", 0) for c in clusters]
    tested = [n for n in sizes if n]
    return {"kind": "paired sign-flip permutation", "unit": "base prompt",
            "statistic": f"mean over base prompts of the per-prompt mean difference of {CLUSTER_METRIC} (shared pairs)",
            "permutations": PERMUTATIONS, "seed": PERMUTATION_SEED, "exact_when": "2**n_prompts <= permutations",
            "correction": "Holm", "family": FAMILY, "alpha": ALPHA,
            "families": len(tested), "family_size_max": max(tested, default=0), "tests_total": int(sum(tested)),
            "expected_false_separations_if_no_model_differs": f"<= {ALPHA} x {len(tested)} families = {ALPHA * len(tested):.2f}",
            "clusters": "compact letter display (insert-and-absorb)",
            "power": {"power": POWER, "alpha": ALPHA, "min_ci_prompts": MIN_CI_PROMPTS,
                      "mde": ("smallest true difference the two-sided test detects with this power: noncentral t on "
                              "the per-prompt values' SD (harness.summary.power); inf below 6 prompts, where no sign-flip "
                              "p-value can reach alpha"),
                      "cell_mde": "shift of a cell's mean from a fixed value (a threshold), SD of its per-prompt means",
                      "comparison_mde": "difference of two models, SD of their per-prompt mean differences"}}


def build_summary(pairs: pd.DataFrame, audit: pd.DataFrame, manifest: dict[str, Any], memo=None,
                  generations: pd.DataFrame | None = None, drift: pd.DataFrame | None = None,
                  exposure: pd.DataFrame | None = None) -> dict[str, Any]:
    """The whole summary.json. ``drift`` None: no drift table rows; ``exposure`` None: computed from ``audit``."""
    from harness.core.memo import Memo, frame_digest

    memo = memo or Memo(None)
    exposure = exposure_table(audit) if exposure is None else exposure
    determinism = determinism_verdict(pairs)
    noise_floor = floor_table(pairs)
    scaffold = scaffold_table(generations)
    drift_rows = drift_table(pairs, drift if drift is not None else pd.DataFrame(columns=pairs.columns))
    unresponsive = unresponsive_table(pairs, generations)
    loops = loop_table(generations)
    # The statistics read the pairs table alone: identical tables, identical (memoized) numbers.
    # "spread": cells memoized before the spread existed must not be served without it; the aggregated
    # metrics: a metric newly aggregated over an unchanged table must not be served from before either.
    cells, clusters = memo.get("stats-prompt-unit", [frame_digest(pairs), "spread", "mde-ci5-pp", "ci-note-prompt-weighted", *summary_metrics()],
                               lambda: (cell_stats(pairs), cluster_stats(pairs)), encode=list, decode=tuple)
    _annotate_clusters(cells, clusters)
    # Answer statistics read the pairs table alone too (their bootstraps memoized the same way).
    answers, answer_flips = memo.get("answers", [frame_digest(pairs), ANSWERS_VERSION], lambda: (answer_table(pairs), dutta_flips(pairs)),
                                     encode=list, decode=tuple)
    # Where the variance comes from and whether the ranking survives (issue 36): the pairs table alone, memoized.
    variance, ranking = memo.get("variance-ranking", [frame_digest(pairs), str(VARIANCE_VERSION), str(RANKING_VERSION)],
                                 lambda: (variance_table(pairs), ranking_table(pairs)), encode=list, decode=tuple)
    return {
        "schema_version": SCHEMA_VERSION,  # harness.schema: validated by the writer (harness.report.write)
        "run": {"status": manifest.get("status"), "command": manifest.get("command"),
                "ladder": manifest.get("config", {}).get("ladder", {}).get("name")},
        "determinism": determinism,
        "models": [{"name": m["name"], "variant": m.get("variant"), "status": m["status"], "error": m.get("error")}
                   for m in manifest.get("models", [])],
        "audit": audit_counts(audit),
        "cells": cells,
        "checks": {"positive_control_exceeds_noop": positive_vs_noop(cells)},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "unit": "base prompt",
                      "statistic": "mean over the pairs of the resampled prompts",
                      "method": f"percentile at a level expanded for n_prompts (nominal {CONFIDENCE:.0%})"},
        "exposure": exposure.to_dict(orient="records"),
        "clusters": clusters,
        "tests": test_design(clusters),
        "flags": (compute_flags(pairs, scaffold, determinism) + collapse_flags(drift_rows)
                  + unresponsive_flags(unresponsive) + loop_flags(loops) + answer_missing_flags(cells)
                  + floor_flags(noise_floor) + no_signal_flags(unresponsive)),
        "drift": drift_rows,
        "tf_drift": tf_drift_table(drift if drift is not None else pd.DataFrame(), pairs),
        "answers": answers,
        "answer_flips": answer_flips,
        "unresponsive": unresponsive,
        "noise_floor": noise_floor,
        "scaffold": scaffold,
        "loops": loops,
        "engines": engine_table(generations if generations is not None else pd.DataFrame(), manifest),
        "variance": variance,
        "ranking": ranking,
    }
