"""`stabprobe compare RUN_A RUN_B`: did stability change between two runs?

Per model x variant x rung x length (a cell), the change is the mean over the
pair ids both runs scored of B - A for one metric (embedding distance by
default). The unit is the base prompt, as in the run's own report: the test is
a sign-flip permutation test on the per-prompt mean differences
(:func:`harness.summary.stats.paired_prompt_test`) and the 95% CI resamples base
prompts. Pair ids scored in one run only are left out of both and counted
(``n_a``, ``n_b`` against ``n_shared``).

Multiplicity: every cell tested in one `compare` is one family, controlled by
Benjamini-Hochberg at ``FDR_Q`` = 0.05. When nothing changed at all, the
chance that the comparison calls *any* cell changed is at most 5% (per
comparison, not per cell); otherwise at most 5% of the cells it calls changed
are expected to be false calls. A cell *regressed* when its BH-adjusted
p-value is below ``FDR_Q``, the change points the bad way and exceeds a
practical threshold (a library update nudging a few tokens must not fail CI;
the threshold only removes calls, so the bounds above still hold);
*improved* is the mirror image; anything else is *unchanged*. The positive
control is the one rung read the other way round: its prompts differ in
meaning, so a model whose outputs move *less* there has become less
responsive (the collapse pattern), and that is the regression. Nothing is
written into either run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core import rundir
from harness.errors import EXIT_FAILED_CHECK, EXIT_OK, InputError
from harness.run.scoring import refuse_different_scoring, scoring_inputs
from harness.ladder.records import POSITIVE_CONTROL, rung_order
from harness.core.rundir_read import load_manifest, read_table
from harness.schema import Manifest
from harness.summary.stats import FDR_Q, benjamini_hochberg, cluster_bootstrap_ci, paired_prompt_test
from harness.report.text import fmt

DEFAULT_THRESHOLD = 0.02
DEFAULT_METRIC = "emb_dist"
CELL = ["model", "variant", "rung", "length"]
MIN_PROMPTS = 2
"""With one base prompt there is no prompt-to-prompt spread to test against: no verdict below this."""

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
TOO_FEW, ONLY_A, ONLY_B = "too_few_prompts", "only_in_a", "only_in_b"


@dataclass(frozen=True)
class CompareRow:
    model: str
    """Model name (registry name or directory)."""
    variant: str
    """Variant, e.g. ``bf16`` or ``int4``."""
    rung: str
    """Ladder rung of the cell."""
    length: int
    """Generated length L the metric was computed on."""
    n_a: int
    """Pairs of this cell in run A."""
    n_b: int
    """Pairs of this cell in run B."""
    paired: bool
    """True when both runs scored exactly the same pair ids in this cell."""
    n_shared: int
    """Pair ids scored in both runs: the change, test and CI use only these."""
    n_prompts: int
    """Base prompts among the shared pairs: the units of the test and the CI."""
    mean_a: float
    """Mean over all of run A's pairs in the cell."""
    mean_b: float
    """Mean over all of run B's pairs in the cell."""
    change: float
    """Mean over the shared pairs of B - A; nan when the cell is in one run only."""
    ci_low: float
    """Lower end of the 95% prompt-level bootstrap CI of ``change`` (not multiplicity-adjusted)."""
    ci_high: float
    """Upper end of that CI."""
    p: float
    """Two-sided sign-flip test on per-prompt mean differences; nan when not tested."""
    p_adj: float
    """Benjamini-Hochberg adjusted over every tested cell of this comparison; nan when not tested."""
    verdict: str
    """regressed / improved / unchanged / too_few_prompts / only_in_a / only_in_b."""


def load_pairs(run_dir: Path, metric: str) -> pd.DataFrame:
    """pairs.parquet of a finished run, with the compared metric present and finite."""
    return load_run(run_dir, metric)[1]


def load_run(run_dir: Path, metric: str) -> tuple[Manifest, pd.DataFrame]:
    """(manifest, pairs) of a finished run, validated; the metric present and finite."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(str(run_dir), "", "not a directory (expected a run directory)")
    for name in (rundir.MANIFEST, rundir.PAIRS):
        if not (run_dir / name).is_file():
            raise InputError(str(run_dir), name, "missing: not a finished run directory")
    manifest = load_manifest(run_dir)
    status = manifest.status
    if status != "complete":
        raise InputError(str(run_dir / rundir.MANIFEST), "status", f"run is {status!r}, not 'complete'")
    pairs = read_table(run_dir / rundir.PAIRS, (*CELL, "pair_id", "prompt_id", metric))
    if not pd.api.types.is_numeric_dtype(pairs[metric]):
        # A text column (answer_a, ...) has no mean to compare: an input error, not compare's "regressed" code.
        raise InputError(str(run_dir / rundir.PAIRS), metric, f"not a numeric metric (column type {pairs[metric].dtype})")
    nan = pairs[metric].isna()
    if nan.any():
        # A NaN distance is a scoring failure, not a value to average over.
        raise InputError(str(run_dir / rundir.PAIRS), metric, f"{int(nan.sum())} rows are NaN")
    return manifest, pairs


def _ladder_identity(manifest: Manifest) -> tuple:
    return manifest.config.ladder.name, manifest.config.ladder.sha256


HIGHER_IS_BETTER = frozenset({POSITIVE_CONTROL})
"""Rungs where a larger distance is the wanted response (a change of meaning should move the output)."""


def _verdict(change: float, p_adj: float, threshold: float, rung: str = "") -> str:
    significant = p_adj < FDR_Q
    up, down = significant and change > threshold, significant and change < -threshold
    if rung in HIGHER_IS_BETTER:
        up, down = down, up
    if up:
        return REGRESSED
    if down:
        return IMPROVED
    return UNCHANGED


@dataclass(frozen=True)
class CellTest:
    """What one cell present in both runs gives before the family-wide correction."""

    paired: bool
    """Both runs scored exactly the same pair ids."""
    n_shared: int
    """Shared pair ids."""
    n_prompts: int
    """Base prompts among them."""
    change: float
    """Mean over the shared pairs of B - A."""
    ci_low: float
    """95% prompt-level CI of ``change``, lower end."""
    ci_high: float
    """Upper end."""
    p: float
    """Raw two-sided p-value; nan when there are fewer than MIN_PROMPTS prompts."""


def compare_cell(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> CellTest:
    """Change, CI and raw p-value of one cell present in both runs, on the pair ids both scored."""
    ids_a, ids_b = a["pair_id"].astype(str), b["pair_id"].astype(str)
    for ids, name in ((ids_a, "A"), (ids_b, "B")):
        if not ids.is_unique:
            dup = ids[ids.duplicated()].iloc[0]
            raise InputError(rundir.PAIRS, "pair_id", f"run {name} scored pair {dup!r} twice in one cell")
    paired = set(ids_a) == set(ids_b)
    va = a.set_index(ids_a)
    vb = b.set_index(ids_b)
    shared = va.index.intersection(vb.index).sort_values()
    x = va.loc[shared, metric].astype(float).to_numpy()
    y = vb.loc[shared, metric].astype(float).to_numpy()
    prompts = va.loc[shared, "prompt_id"].astype(str).to_numpy()
    n_prompts = len(set(prompts))
    change = float((y - x).mean()) if len(shared) else float("nan")
    if n_prompts < MIN_PROMPTS:
        return CellTest(paired, len(shared), n_prompts, change, float("nan"), float("nan"), float("nan"))
    lo, hi = cluster_bootstrap_ci(y - x, prompts)
    p = paired_prompt_test(y, x, prompts).pvalue
    return CellTest(paired, len(shared), n_prompts, change, lo, hi, p)


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
    # Different embedder or metrics: every distance moves with no model changed (issue 34, defect 1).
    refuse_different_scoring(str(Path(run_b) / rundir.MANIFEST), scoring_inputs(ma), scoring_inputs(mb),
                             "runs were scored")
    ga = {k: g for k, g in pa.groupby(CELL, sort=False)}
    gb = {k: g for k, g in pb.groupby(CELL, sort=False)}
    keys = sorted(set(ga) | set(gb), key=lambda k: (str(k[0]), str(k[1]), rung_order(k[2]), int(k[3])))
    tests = {k: compare_cell(ga[k], gb[k], metric) for k in keys if k in ga and k in gb}
    tested = [k for k, t in tests.items() if not np.isnan(t.p)]
    # One family: every cell tested in this comparison.
    p_adj = dict(zip(tested, benjamini_hochberg([tests[k].p for k in tested]).tolist()))
    rows = []
    for key in keys:
        model, variant, rung, length = str(key[0]), str(key[1]), str(key[2]), int(key[3])
        a, b = ga.get(key), gb.get(key)
        mean_a = float(a[metric].mean()) if a is not None else float("nan")
        mean_b = float(b[metric].mean()) if b is not None else float("nan")
        n_a, n_b = 0 if a is None else len(a), 0 if b is None else len(b)
        t = tests.get(key)
        if t is None:
            rows.append(CompareRow(model, variant, rung, length, n_a, n_b, False, 0, 0, mean_a, mean_b, float("nan"),
                                   float("nan"), float("nan"), float("nan"), float("nan"), ONLY_B if a is None else ONLY_A))
            continue
        q = p_adj.get(key, float("nan"))
        verdict = TOO_FEW if np.isnan(t.p) else _verdict(t.change, q, threshold, rung)
        rows.append(CompareRow(model, variant, rung, length, n_a, n_b, t.paired, t.n_shared, t.n_prompts, mean_a, mean_b,
                               t.change, t.ci_low, t.ci_high, t.p, q, verdict))
    if not any(r.verdict not in (ONLY_A, ONLY_B) for r in rows):
        models_a = sorted({f"{m}/{v}" for m, v in zip(pa["model"], pa["variant"])})
        models_b = sorted({f"{m}/{v}" for m, v in zip(pb["model"], pb["variant"])})
        raise InputError(f"{run_a} vs {run_b}", "model x variant",
                         f"no model x variant x rung x length in both runs (A: {', '.join(models_a) or 'none'}; "
                         f"B: {', '.join(models_b) or 'none'}): nothing to compare")
    return rows


def family_note(rows: list[CompareRow]) -> str:
    """How many cells were tested and what error rate the decision rule implies (printed under the table)."""
    tested = [r for r in rows if not np.isnan(r.p)]
    called = [r for r in tested if r.verdict in (REGRESSED, IMPROVED)]
    significant = [r.p for r in tested if r.p_adj < FDR_Q]
    cut = f"raw p <= {max(significant):.3g}" if significant else "no cell reached it"
    return (f"family: {len(tested)} cells tested (paired sign-flip test on per-prompt mean differences over shared pairs), "
            f"Benjamini-Hochberg at q = {FDR_Q}: if no cell truly changed, P(any false regressed/improved call) <= {FDR_Q}; "
            f"otherwise <= {FDR_Q:.0%} of the {len(called)} cells called changed are expected to be false "
            f"(BH cut-off this time: {cut}); the threshold only removes calls")



def _p(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3g}"


def render_compare(rows: list[CompareRow], metric: str, threshold: float) -> str:
    mw = max([18] + [len(r.model) + 2 for r in rows])
    vw = max([9] + [len(r.variant) + 2 for r in rows])
    head = (f"{'model':<{mw}}{'variant':<{vw}}{'rung':<18}{'L':>5}{'n A':>6}{'n B':>6}{'shared':>7}{'prompts':>8}  "
            f"{'mean A':>9}{'mean B':>9}{'change':>9}  {'95% CI':<21}{'p':>8}{'p (BH)':>8}  verdict")
    lines = [f"compare {metric}: change = mean over shared pairs of B - A, unit = base prompt; regressed/improved need "
             f"the BH-adjusted p < {FDR_Q} and |change| > {threshold}; on {', '.join(sorted(HIGHER_IS_BETTER))} "
             f"a fall is the regression", head, "-" * len(head)]
    for r in rows:
        ci = "-" if np.isnan(r.ci_low) else f"[{fmt(r.ci_low, True, nan='-')}, {fmt(r.ci_high, True, nan='-')}]"
        verdict = r.verdict.upper() if r.verdict == REGRESSED else r.verdict
        lines.append(f"{r.model:<{mw}}{r.variant:<{vw}}{r.rung:<18}{r.length:>5}{r.n_a:>6}{r.n_b:>6}{r.n_shared:>7}"
                     f"{r.n_prompts:>8}  {fmt(r.mean_a, nan='-'):>9}{fmt(r.mean_b, nan='-'):>9}{fmt(r.change, True, nan='-'):>9}  "
                     f"{ci:<21}{_p(r.p):>8}{_p(r.p_adj):>8}  {verdict}")
    counts = {v: sum(r.verdict == v for r in rows) for v in (REGRESSED, IMPROVED, UNCHANGED, TOO_FEW, ONLY_A, ONLY_B)}
    lines.append(", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n or v in (REGRESSED, IMPROVED, UNCHANGED)))
    lines.append(family_note(rows))
    return "\n".join(lines)


def exit_code(rows: list[CompareRow]) -> int:
    return EXIT_FAILED_CHECK if any(r.verdict == REGRESSED for r in rows) else EXIT_OK
