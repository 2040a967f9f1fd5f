"""`stabprobe compare RUN_A RUN_B`: did stability change between two runs?

Per model x variant x rung x length, the change is mean(B) - mean(A) of one
metric (embedding distance by default) with a bootstrap 95% CI. When both
runs scored the same pair ids the CI is paired (per-pair differences
resampled together, which cancels the pair-to-pair spread both runs share);
otherwise the two samples are resampled independently.

A cell *regressed* when the whole CI lies above 0 and the change exceeds a
practical threshold (a larger distance = a less stable model); *improved* is
the mirror image; anything else is *unchanged*. The threshold keeps a
statistically real but negligible shift (e.g. a library update nudging a few
tokens) from failing CI. The positive control is the one rung read the other
way round: its prompts differ in meaning, so a model whose outputs move *less*
there has become less responsive (the collapse pattern), and that is the
regression; more movement there is an improvement. Nothing is written into either run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core import rundir
from harness.errors import EXIT_FAILED_CHECK, EXIT_OK, InputError
from harness.ladder.records import RUNGS
from harness.core.rundir_read import read_manifest, read_table
from harness.summary.stats import bootstrap_diff_ci

DEFAULT_THRESHOLD = 0.02
DEFAULT_METRIC = "emb_dist"
CELL = ["model", "variant", "rung", "length"]
MIN_PAIRS = 2
"""With one pair a bootstrap CI has zero width whatever the noise: no verdict below this."""

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
TOO_FEW, ONLY_A, ONLY_B = "too_few_pairs", "only_in_a", "only_in_b"


@dataclass(frozen=True)
class CompareRow:
    model: str
    variant: str
    rung: str
    length: int
    n_a: int
    n_b: int
    paired: bool
    """True when both runs scored exactly the same pair ids in this cell."""
    mean_a: float
    mean_b: float
    change: float
    """mean_b - mean_a; nan when the cell is in one run only."""
    ci_low: float
    ci_high: float
    verdict: str


def load_pairs(run_dir: Path, metric: str) -> pd.DataFrame:
    """pairs.parquet of a finished run, with the compared metric present and finite."""
    return load_run(run_dir, metric)[1]


def load_run(run_dir: Path, metric: str) -> tuple[dict, pd.DataFrame]:
    """(manifest, pairs) of a finished run, validated; the metric present and finite."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(str(run_dir), "", "not a directory (expected a run directory)")
    for name in (rundir.MANIFEST, rundir.PAIRS):
        if not (run_dir / name).is_file():
            raise InputError(str(run_dir), name, "missing: not a finished run directory")
    manifest = read_manifest(run_dir)
    status = manifest["status"]
    if status != "complete":
        raise InputError(str(run_dir / rundir.MANIFEST), "status", f"run is {status!r}, not 'complete'")
    pairs = read_table(run_dir / rundir.PAIRS, (*CELL, "pair_id", metric))
    nan = pairs[metric].isna()
    if nan.any():
        # A NaN distance is a scoring failure, not a value to average over.
        raise InputError(str(run_dir / rundir.PAIRS), metric, f"{int(nan.sum())} rows are NaN")
    return manifest, pairs


def _ladder_identity(manifest: dict) -> tuple:
    lad = manifest["config"]["ladder"]
    return lad.get("name"), lad.get("sha256")


HIGHER_IS_BETTER = frozenset({"positive_control"})
"""Rungs where a larger distance is the wanted response (a change of meaning should move the output)."""


def _verdict(change: float, lo: float, hi: float, threshold: float, rung: str = "") -> str:
    up, down = lo > 0 and change > threshold, hi < 0 and change < -threshold
    if rung in HIGHER_IS_BETTER:
        up, down = down, up
    if up:
        return REGRESSED
    if down:
        return IMPROVED
    return UNCHANGED


def compare_cell(a: pd.DataFrame, b: pd.DataFrame, metric: str, threshold: float,
                 rung: str = "") -> tuple[bool, float, float, float, str]:
    """(paired, change, ci low, ci high, verdict) for one cell present in both runs."""
    ids_a, ids_b = a["pair_id"].astype(str), b["pair_id"].astype(str)
    paired = ids_a.is_unique and ids_b.is_unique and set(ids_a) == set(ids_b)
    if paired:
        va = a.set_index(ids_a)[metric].astype(float)
        vb = b.set_index(ids_b)[metric].astype(float).reindex(va.index)
        x, y = va.to_numpy(), vb.to_numpy()
    else:
        x, y = a[metric].astype(float).to_numpy(), b[metric].astype(float).to_numpy()
    change = float(y.mean() - x.mean())
    if min(len(x), len(y)) < MIN_PAIRS:
        return paired, change, float("nan"), float("nan"), TOO_FEW
    lo, hi = bootstrap_diff_ci(x, y, paired=paired)
    return paired, change, lo, hi, _verdict(change, lo, hi, threshold, rung)


def compare_runs(run_a: Path, run_b: Path, threshold: float = DEFAULT_THRESHOLD,
                 metric: str = DEFAULT_METRIC) -> list[CompareRow]:
    if not threshold >= 0:  # also rejects NaN
        raise InputError("--threshold", str(threshold), "expected a non-negative number")
    (ma, pa), (mb, pb) = load_run(run_a, metric), load_run(run_b, metric)
    if _ladder_identity(ma) != _ladder_identity(mb):
        # Different prompts: a change of the mean says nothing about the model, and no pair is paired.
        (na, sa), (nb, sb) = _ladder_identity(ma), _ladder_identity(mb)
        raise InputError(str(Path(run_b) / rundir.MANIFEST), "config.ladder",
                         f"runs used different ladders ({na} sha256 {str(sa)[:12]} in A, {nb} sha256 {str(sb)[:12]} in B): "
                         "nothing to compare")
    ga = {k: g for k, g in pa.groupby(CELL, sort=False)}
    gb = {k: g for k, g in pb.groupby(CELL, sort=False)}
    order = {r: i for i, r in enumerate(RUNGS)}
    rows = []
    for key in sorted(set(ga) | set(gb), key=lambda k: (str(k[0]), str(k[1]), order.get(k[2], 99), int(k[3]))):
        model, variant, rung, length = str(key[0]), str(key[1]), str(key[2]), int(key[3])
        a, b = ga.get(key), gb.get(key)
        mean_a = float(a[metric].mean()) if a is not None else float("nan")
        mean_b = float(b[metric].mean()) if b is not None else float("nan")
        if a is None or b is None:
            rows.append(CompareRow(model, variant, rung, length, 0 if a is None else len(a), 0 if b is None else len(b),
                                   False, mean_a, mean_b, float("nan"), float("nan"), float("nan"),
                                   ONLY_B if a is None else ONLY_A))
            continue
        paired, change, lo, hi, verdict = compare_cell(a, b, metric, threshold, rung)
        rows.append(CompareRow(model, variant, rung, length, len(a), len(b), paired, mean_a, mean_b, change, lo, hi, verdict))
    if not any(r.verdict not in (ONLY_A, ONLY_B) for r in rows):
        models_a = sorted({f"{m}/{v}" for m, v in zip(pa["model"], pa["variant"])})
        models_b = sorted({f"{m}/{v}" for m, v in zip(pb["model"], pb["variant"])})
        raise InputError(f"{run_a} vs {run_b}", "model x variant",
                         f"no model x variant x rung x length in both runs (A: {', '.join(models_a) or 'none'}; "
                         f"B: {', '.join(models_b) or 'none'}): nothing to compare")
    return rows


def _f(x: float, signed: bool = False) -> str:
    if np.isnan(x):
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def render_compare(rows: list[CompareRow], metric: str, threshold: float) -> str:
    mw = max([18] + [len(r.model) + 2 for r in rows])
    vw = max([9] + [len(r.variant) + 2 for r in rows])
    head = (f"{'model':<{mw}}{'variant':<{vw}}{'rung':<18}{'L':>5}{'n A':>6}{'n B':>6}  {'pairing':<9}"
            f"{'mean A':>9}{'mean B':>9}{'change':>9}  {'95% CI':<21}verdict")
    lines = [f"compare {metric}: change = mean(B) - mean(A); regressed/improved need the CI to exclude 0 "
             f"and |change| > {threshold}; on {', '.join(sorted(HIGHER_IS_BETTER))} a fall is the regression",
             head, "-" * len(head)]
    for r in rows:
        ci = "-" if np.isnan(r.ci_low) else f"[{_f(r.ci_low, True)}, {_f(r.ci_high, True)}]"
        verdict = r.verdict.upper() if r.verdict == REGRESSED else r.verdict
        lines.append(f"{r.model:<{mw}}{r.variant:<{vw}}{r.rung:<18}{r.length:>5}{r.n_a:>6}{r.n_b:>6}  "
                     f"{'paired' if r.paired else 'unpaired':<9}{_f(r.mean_a):>9}{_f(r.mean_b):>9}{_f(r.change, True):>9}  "
                     f"{ci:<21}{verdict}")
    counts = {v: sum(r.verdict == v for r in rows) for v in (REGRESSED, IMPROVED, UNCHANGED, TOO_FEW, ONLY_A, ONLY_B)}
    lines.append(", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n or v in (REGRESSED, IMPROVED, UNCHANGED)))
    return "\n".join(lines)


def exit_code(rows: list[CompareRow]) -> int:
    return EXIT_FAILED_CHECK if any(r.verdict == REGRESSED for r in rows) else EXIT_OK
