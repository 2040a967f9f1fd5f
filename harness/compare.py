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

Model selection (``--models X,Y``): model X of run A against model Y of run B
(or of run A again when only one run is given) on the same ladder, per variant
x rung x length, paired by pair id: the same test, CI and family, with the
verdicts ``a_better`` / ``b_better`` / ``no_difference`` (lower distance is
better, except on the positive control) and no failing exit code: choosing a
model is not a regression.

One weighting everywhere: the change is the mean over base prompts of each
prompt's mean difference (over its shared pairs), the quantity the sign-flip
test is about and the CI resamples; the printed per-side means are per-prompt
means too. Rows whose metric is NaN (e.g. ``emb_dist_answer`` without an
answer span) are dropped and counted (``n_missing_a``/``n_missing_b``). Every
row carries the minimum detectable difference at its prompts and prompt-level
SD (harness.summary.power.mde, 80% power): ``no_difference`` with an MDE of
0.3 says little.
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
from harness.summary.power import mde as _mde
from harness.summary.power import prompt_sd as _prompt_sd
from harness.summary.stats import FDR_Q, benjamini_hochberg, cluster_bootstrap_ci, prompt_permutation_tests
from harness.summary.ranking import ranking_stability
from harness.report.text import fmt
from harness.report.variance_tables import RANKING_HEADER, RANKING_NOTE, ranking_rows

DEFAULT_THRESHOLD = 0.02
DEFAULT_METRIC = "emb_dist"
CELL = ["model", "variant", "rung", "length"]
MIN_PROMPTS = 2
"""With one base prompt there is no prompt-to-prompt spread to test against: no verdict below this."""

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
TOO_FEW, ONLY_A, ONLY_B = "too_few_prompts", "only_in_a", "only_in_b"
A_BETTER, B_BETTER, NO_DIFFERENCE = "a_better", "b_better", "no_difference"
MODEL_VERDICT = {REGRESSED: A_BETTER, IMPROVED: B_BETTER, UNCHANGED: NO_DIFFERENCE}
"""Model-selection names of the regression verdicts (B worse than A = A better)."""


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
    """Mean over base prompts of the per-prompt means of run A's finite pairs in the cell."""
    mean_b: float
    """The same for run B."""
    change: float
    """Mean over base prompts of the per-prompt mean of B - A over the shared pairs; nan when the cell is in one run only."""
    ci_low: float
    """Lower end of the 95% prompt-level bootstrap CI of ``change`` (not multiplicity-adjusted)."""
    ci_high: float
    """Upper end of that CI."""
    p: float
    """Two-sided sign-flip test on per-prompt mean differences; nan when not tested."""
    p_adj: float
    """Benjamini-Hochberg adjusted over every tested cell of this comparison; nan when not tested."""
    verdict: str
    """regressed / improved / unchanged (model selection: a_better / b_better / no_difference) / too_few_prompts /
    only_in_a / only_in_b."""
    n_missing_a: int = 0
    """Run A's pairs of this cell whose metric is NaN: dropped from every number of the row, counted here."""
    n_missing_b: int = 0
    """The same for run B."""
    prompt_sd: float = float("nan")
    """SD (ddof 1) over base prompts of the per-prompt differences: what the test's power depends on."""
    mde: float = float("nan")
    """Minimum detectable difference at 80% power with these prompts and that SD (harness.summary.power.mde); inf
    below the fewest prompts a sign-flip test can reject with."""


def load_pairs(run_dir: Path, metric: str) -> pd.DataFrame:
    """pairs.parquet of a finished run, with the compared metric present and finite."""
    return load_run(run_dir, metric)[1]


def load_run(run_dir: Path, metric: str) -> tuple[Manifest, pd.DataFrame]:
    """(manifest, pairs) of a finished run, validated; the metric present (NaN rows kept: the cells count them)."""
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
    """Both runs scored exactly the same pair ids (finite in both)."""
    n_shared: int
    """Shared pair ids with a finite metric on both sides."""
    n_prompts: int
    """Base prompts among them."""
    change: float
    """Mean over base prompts of the per-prompt mean of B - A."""
    ci_low: float
    """95% prompt-level CI of ``change``, lower end."""
    ci_high: float
    """Upper end."""
    p: float
    """Raw two-sided p-value; nan when there are fewer than MIN_PROMPTS prompts."""
    prompt_sd: float = float("nan")
    """SD over base prompts of the per-prompt differences."""
    mde: float = float("nan")
    """Minimum detectable difference at that SD and prompt count."""


def _finite(g: pd.DataFrame, metric: str) -> pd.DataFrame:
    return g[g[metric].notna()]


def _prompt_mean(g: pd.DataFrame, metric: str) -> float:
    f = _finite(g, metric)
    return float(f.groupby(f["prompt_id"].astype(str))[metric].mean().mean()) if len(f) else float("nan")


def compare_cell(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> CellTest:
    """Change, CI, raw p-value and MDE of one cell present in both, on the pair ids both scored with a finite metric.

    Each base prompt counts once (its mean difference over its shared pairs) in the change, the CI and the test.
    """
    ids_a, ids_b = a["pair_id"].astype(str), b["pair_id"].astype(str)
    for ids, name in ((ids_a, "A"), (ids_b, "B")):
        if not ids.is_unique:
            dup = ids[ids.duplicated()].iloc[0]
            raise InputError(rundir.PAIRS, "pair_id", f"run {name} scored pair {dup!r} twice in one cell")
    fa, fb = _finite(a, metric), _finite(b, metric)
    va, vb = fa.set_index(fa["pair_id"].astype(str)), fb.set_index(fb["pair_id"].astype(str))
    paired = set(ids_a) == set(ids_b) and len(fa) == len(a) and len(fb) == len(b)
    shared = va.index.intersection(vb.index).sort_values()
    d = vb.loc[shared, metric].astype(float).to_numpy() - va.loc[shared, metric].astype(float).to_numpy()
    per_prompt = pd.Series(d).groupby(va.loc[shared, "prompt_id"].astype(str).to_numpy()).mean()
    n_prompts = int(per_prompt.size)
    change = float(per_prompt.mean()) if n_prompts else float("nan")
    sd = _prompt_sd(per_prompt.to_numpy())
    floor = _mde(sd, n_prompts)
    if n_prompts < MIN_PROMPTS:
        return CellTest(paired, len(shared), n_prompts, change, float("nan"), float("nan"), float("nan"), sd, floor)
    # One value per prompt: the bootstrap of their mean is the prompt-weighted interval of ``change``.
    lo, hi = cluster_bootstrap_ci(per_prompt.to_numpy(), per_prompt.index.to_numpy())
    p = prompt_permutation_tests(per_prompt.to_numpy()[None])[0].pvalue
    return CellTest(paired, len(shared), n_prompts, change, lo, hi, p, sd, floor)


def _select_model(pairs: pd.DataFrame, model: str, run: Path) -> pd.DataFrame:
    g = pairs[pairs["model"].astype(str) == model]
    if g.empty:
        raise InputError(str(Path(run) / rundir.PAIRS), "model",
                         f"no pairs of {model!r} (models: {', '.join(sorted(pairs['model'].astype(str).unique()))})")
    return g.assign(model=model)


def compare_runs(run_a: Path, run_b: Path | None = None, threshold: float = DEFAULT_THRESHOLD,
                 metric: str = DEFAULT_METRIC, models: tuple[str, str] | None = None) -> list[CompareRow]:
    """Regression mode (``models`` None): per model x variant x rung x length, B against A. Model selection
    (``models`` = (X, Y)): X of run A against Y of run B (run A when ``run_b`` is None), per variant x rung x length.
    """
    if not threshold >= 0:  # also rejects NaN
        raise InputError("--threshold", str(threshold), "expected a non-negative number")
    if run_b is None and models is None:
        raise InputError("compare", "RUN_B", "one run directory compares two of its models: give --models X,Y")
    ma, pa = load_run(run_a, metric)
    mb, pb = (ma, pa) if run_b is None else load_run(run_b, metric)
    run_b = run_a if run_b is None else run_b
    if _ladder_identity(ma) != _ladder_identity(mb):
        # Different prompts: a change of the mean says nothing about the model, and no pair is paired.
        (na, sa), (nb, sb) = _ladder_identity(ma), _ladder_identity(mb)
        raise InputError(str(Path(run_b) / rundir.MANIFEST), "config.ladder",
                         f"runs used different ladders ({na} sha256 {str(sa)[:12]} in A, {nb} sha256 {str(sb)[:12]} in B): "
                         "nothing to compare")
    # Different embedder or metrics: every distance moves with no model changed (issue 34, defect 1).
    refuse_different_scoring(str(Path(run_b) / rundir.MANIFEST), scoring_inputs(ma), scoring_inputs(mb),
                             "runs were scored")
    if models is not None:
        label = f"{models[0]} vs {models[1]}"
        # One model column for both sides: the cells then meet on variant x rung x length.
        pa = _select_model(pa, models[0], run_a).assign(model=label)
        pb = _select_model(pb, models[1], run_b).assign(model=label)
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
        mean_a = _prompt_mean(a, metric) if a is not None else float("nan")
        mean_b = _prompt_mean(b, metric) if b is not None else float("nan")
        n_a, n_b = 0 if a is None else len(a), 0 if b is None else len(b)
        miss_a = 0 if a is None else int(a[metric].isna().sum())
        miss_b = 0 if b is None else int(b[metric].isna().sum())
        t = tests.get(key)
        if t is None:
            rows.append(CompareRow(model, variant, rung, length, n_a, n_b, False, 0, 0, mean_a, mean_b, float("nan"),
                                   float("nan"), float("nan"), float("nan"), float("nan"), ONLY_B if a is None else ONLY_A,
                                   miss_a, miss_b))
            continue
        q = p_adj.get(key, float("nan"))
        verdict = TOO_FEW if np.isnan(t.p) else _verdict(t.change, q, threshold, rung)
        if models is not None:
            verdict = MODEL_VERDICT.get(verdict, verdict)
        rows.append(CompareRow(model, variant, rung, length, n_a, n_b, t.paired, t.n_shared, t.n_prompts, mean_a, mean_b,
                               t.change, t.ci_low, t.ci_high, t.p, q, verdict, miss_a, miss_b, t.prompt_sd, t.mde))
    if not any(r.verdict not in (ONLY_A, ONLY_B) for r in rows):
        models_a = sorted({f"{m}/{v}" for m, v in zip(pa["model"], pa["variant"])})
        models_b = sorted({f"{m}/{v}" for m, v in zip(pb["model"], pb["variant"])})
        hint = "" if models is not None else "; to compare two models, give --models X,Y"
        raise InputError(f"{run_a} vs {run_b}", "model x variant",
                         f"no model x variant x rung x length in both runs (A: {', '.join(models_a) or 'none'}; "
                         f"B: {', '.join(models_b) or 'none'}): nothing to compare{hint}")
    return rows


def family_note(rows: list[CompareRow]) -> str:
    """How many cells were tested and what error rate the decision rule implies (printed under the table)."""
    tested = [r for r in rows if not np.isnan(r.p)]
    called = [r for r in tested if r.verdict in (REGRESSED, IMPROVED, A_BETTER, B_BETTER)]
    significant = [r.p for r in tested if r.p_adj < FDR_Q]
    cut = f"raw p <= {max(significant):.3g}" if significant else "no cell reached it"
    return (f"family: {len(tested)} cells tested (paired sign-flip test on per-prompt mean differences over shared pairs), "
            f"Benjamini-Hochberg at q = {FDR_Q}: if no cell truly changed, P(any false regressed/improved call) <= {FDR_Q}; "
            f"otherwise <= {FDR_Q:.0%} of the {len(called)} cells called changed are expected to be false "
            f"(BH cut-off this time: {cut}); the threshold only removes calls")



def _p(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3g}"


def render_compare(rows: list[CompareRow], metric: str, threshold: float, models: tuple[str, str] | None = None) -> str:
    mw = max([18] + [len(r.model) + 2 for r in rows])
    vw = max([9] + [len(r.variant) + 2 for r in rows])
    head = (f"{'model':<{mw}}{'variant':<{vw}}{'rung':<18}{'L':>5}{'n A':>6}{'n B':>6}{'shared':>7}{'prompts':>8}"
            f"{'NaN A':>6}{'NaN B':>6}  {'mean A':>9}{'mean B':>9}{'change':>9}  {'95% CI':<21}{'MDE':>8}{'p':>8}"
            f"{'p (BH)':>8}  verdict")
    if models is None:
        intro = (f"compare {metric}: change = B - A, mean over base prompts of each prompt's mean over shared pairs; "
                 f"regressed/improved need the BH-adjusted p < {FDR_Q} and |change| > {threshold}; on "
                 f"{', '.join(sorted(HIGHER_IS_BETTER))} a fall is the regression")
    else:
        intro = (f"compare {metric}: A = {models[0]}, B = {models[1]}; change = B - A, mean over base prompts of each "
                 f"prompt's mean over shared pairs; a_better/b_better need the BH-adjusted p < {FDR_Q} and |change| > "
                 f"{threshold} (lower is better, except on {', '.join(sorted(HIGHER_IS_BETTER))}); MDE = smallest "
                 f"change detected 80% of the time at these prompts")
    lines = [intro, head, "-" * len(head)]
    for r in rows:
        ci = "-" if np.isnan(r.ci_low) else f"[{fmt(r.ci_low, True, nan='-')}, {fmt(r.ci_high, True, nan='-')}]"
        verdict = r.verdict.upper() if r.verdict == REGRESSED else r.verdict
        floor = "-" if np.isnan(r.mde) else ("inf" if np.isinf(r.mde) else fmt(r.mde, nan="-"))
        lines.append(f"{r.model:<{mw}}{r.variant:<{vw}}{r.rung:<18}{r.length:>5}{r.n_a:>6}{r.n_b:>6}{r.n_shared:>7}"
                     f"{r.n_prompts:>8}{r.n_missing_a:>6}{r.n_missing_b:>6}  {fmt(r.mean_a, nan='-'):>9}"
                     f"{fmt(r.mean_b, nan='-'):>9}{fmt(r.change, True, nan='-'):>9}  {ci:<21}{floor:>8}{_p(r.p):>8}"
                     f"{_p(r.p_adj):>8}  {verdict}")
    names = (REGRESSED, IMPROVED, UNCHANGED) if models is None else (A_BETTER, B_BETTER, NO_DIFFERENCE)
    counts = {v: sum(r.verdict == v for r in rows) for v in (*names, TOO_FEW, ONLY_A, ONLY_B)}
    lines.append(", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n or v in names))
    lines.append(family_note(rows))
    return "\n".join(lines)


def _num(x: float) -> float | str | None:
    """JSON has no NaN or inf: NaN is null (not computed), inf the string "inf" (MDE below the fewest prompts)."""
    return None if np.isnan(x) else ("inf" if np.isinf(x) else float(x))


def compare_json(rows: list[CompareRow], metric: str, threshold: float, models: tuple[str, str] | None = None) -> dict:
    """The table's numbers as one JSON object (``compare --json``): the same rows, fields as in CompareRow."""
    from dataclasses import asdict

    out = []
    for r in rows:
        d = asdict(r)
        out.append({k: _num(v) if isinstance(v, float) else v for k, v in d.items()})
    return {"mode": "regression" if models is None else "models", "metric": metric, "threshold": threshold,
            "fdr_q": FDR_Q, "models": list(models) if models else None, "rows": out, "family": family_note(rows)}


def compare_ranking(run_a: Path, run_b: Path | None, models: tuple[str, str]) -> list[dict]:
    """Ranking stability of model X (run A) against model Y (run B, or A) per variant x length x rung x measure.

    The two are the ranked units, paired by pair id as in :func:`compare_runs` (whose checks, run first, refuse
    different ladders or scoring). A run from before answers were checked lacks ``correct_a``: distance only.
    """
    frames = []
    for run, model, side in ((run_a, models[0], "A"), (run_b if run_b is not None else run_a, models[1], "B")):
        pairs = read_table(Path(run) / rundir.PAIRS, (*CELL, "pair_id", "prompt_id"))
        # The same model from two runs needs two names: the unit says which run it came from.
        unit = model if models[0] != models[1] else f"{model} ({side})"
        frames.append(_select_model(pairs, model, run).assign(unit=unit))
    # Answers absent from both runs: distance only; from one run: NaN on its side, so the accuracy rows say they
    # have no prompt with a value for both (never a ranking of one side against nothing).
    both = pd.concat(frames, ignore_index=True)
    return ranking_stability(both, "unit", ("variant", "length"))


def render_ranking(rows: list[dict]) -> str:
    """The ranking-stability rows as a text table (under the model-selection table)."""
    body = ranking_rows(rows, ("variant", "length"))
    header = ["variant", "L", *RANKING_HEADER]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    lines = ["ranking stability: " + RANKING_NOTE,
             "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-" * len(lines[-1]))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    if not body:
        lines.append("no rung has pairs of both models")
    return "\n".join(lines)


def exit_code(rows: list[CompareRow]) -> int:
    return EXIT_FAILED_CHECK if any(r.verdict == REGRESSED for r in rows) else EXIT_OK
