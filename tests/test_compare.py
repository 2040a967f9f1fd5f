"""`stabprobe compare`: an unchanged re-run is unchanged, an injected regression is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core import rundir
from harness.cli import main
from harness.compare import REGRESSED, UNCHANGED, compare_runs, exit_code
from tests.report.test_report_html import build_synthetic_run


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    return build_synthetic_run(tmp_path_factory.mktemp("runA"))


def _copy_with(run: Path, dest: Path, edit=None) -> Path:
    shutil.copytree(run, dest)
    if edit is not None:
        pairs = pd.read_parquet(dest / rundir.PAIRS)
        rundir.atomic_write_parquet(dest / rundir.PAIRS, edit(pairs))
    return dest


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_unchanged_rerun_is_unchanged_everywhere(run_a, tmp_path, capsys):
    run_b = _copy_with(run_a, tmp_path / "b")
    before = _snapshot(run_a), _snapshot(run_b)
    rows = compare_runs(run_a, run_b)
    assert rows and {r.verdict for r in rows} == {UNCHANGED}
    assert all(r.paired and r.change == 0.0 for r in rows)
    assert main(["compare", str(run_a), str(run_b)]) == 0
    out = capsys.readouterr().out
    assert "0 regressed" in out and "REGRESSED" not in out
    assert (_snapshot(run_a), _snapshot(run_b)) == before  # nothing written into either run


def _bump(model: str, rung: str, by: float):
    def edit(p: pd.DataFrame) -> pd.DataFrame:
        p = p.copy()
        m = (p["model"] == model) & (p["rung"] == rung)
        p.loc[m, "emb_dist"] = p.loc[m, "emb_dist"] + by
        return p
    return edit


def test_injected_regression_is_flagged(run_a, tmp_path, capsys):
    run_b = _copy_with(run_a, tmp_path / "b", _bump("steady", "paraphrase", 0.2))
    rows = compare_runs(run_a, run_b)
    regressed = {(r.model, r.variant, r.rung, r.length) for r in rows if r.verdict == REGRESSED}
    assert regressed == {("steady", "bf16", "paraphrase", 8), ("steady", "bf16", "paraphrase", 32)}
    hit = [r for r in rows if r.verdict == REGRESSED]
    # Every prompt moved by exactly 0.2: constant differences give no interval (NaN, never a zero-width one).
    assert all(r.change == pytest.approx(0.2) and np.isnan(r.ci_low) for r in hit)
    assert exit_code(rows) == 1
    assert main(["compare", str(run_a), str(run_b)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "2 regressed" in out
    # The reverse direction is an improvement, and improvements do not fail.
    assert main(["compare", str(run_b), str(run_a)]) == 0
    assert "2 improved" in capsys.readouterr().out


def test_noise_below_threshold_is_unchanged(run_a, tmp_path):
    rng = np.random.default_rng(0)

    def jitter(p: pd.DataFrame) -> pd.DataFrame:
        p = p.copy()
        m = p["rung"] != "identical"
        p.loc[m, "emb_dist"] = p.loc[m, "emb_dist"] + rng.normal(0.0, 0.005, int(m.sum()))
        return p

    rows = compare_runs(run_a, _copy_with(run_a, tmp_path / "b", jitter))
    assert {r.verdict for r in rows} == {UNCHANGED}


def test_threshold_flag_decides_small_real_shifts(run_a, tmp_path):
    run_b = _copy_with(run_a, tmp_path / "b", _bump("jumpy", "synonym", 0.01))
    assert main(["compare", str(run_a), str(run_b)]) == 0  # real but below the default 0.02
    assert main(["compare", str(run_a), str(run_b), "--threshold", "0.005"]) == 1


def test_different_pair_ids_are_compared_on_the_shared_ones(run_a, tmp_path):
    def drop_some(p: pd.DataFrame) -> pd.DataFrame:
        return p[~p["pair_id"].str.startswith("p0/")]

    rows = compare_runs(run_a, _copy_with(run_a, tmp_path / "b", drop_some))
    assert rows and not any(r.paired for r in rows)
    assert all(r.n_shared == r.n_b == r.n_a - 1 and r.n_prompts == r.n_shared for r in rows)  # one pair per prompt here
    assert {r.verdict for r in rows} == {UNCHANGED}


def test_the_family_is_every_tested_cell_and_the_report_says_so(run_a, tmp_path, capsys):
    run_b = _copy_with(run_a, tmp_path / "b", _bump("steady", "paraphrase", 0.2))
    rows = compare_runs(run_a, run_b)
    tested = [r for r in rows if r.p == r.p]
    assert len(tested) == len(rows)  # every cell has >= 2 prompts in both runs
    hit = [r for r in rows if r.verdict == REGRESSED]
    # 10 prompts all shifted by +0.2: the most extreme of 2**10 sign patterns, p = 2/1024; BH over all cells.
    assert all(r.p == pytest.approx(2 / 1024) for r in hit)
    assert all(r.p_adj == pytest.approx(2 / 1024 * len(tested) / 2) for r in hit)
    assert main(["compare", str(run_a), str(run_b)]) == 1
    out = capsys.readouterr().out
    assert f"family: {len(tested)} cells tested" in out and "Benjamini-Hochberg at q = 0.05" in out


def test_a_shift_on_too_few_prompts_is_not_a_regression(run_a, tmp_path):
    # The same +0.2 on three of ten prompts: real but not shown at the prompt level once the family is corrected.
    def bump_three(p: pd.DataFrame) -> pd.DataFrame:
        p = p.copy()
        m = (p["model"] == "steady") & (p["rung"] == "paraphrase") & p["prompt_id"].isin(["p0", "p1", "p2"])
        p.loc[m, "emb_dist"] += 0.2
        return p

    rows = compare_runs(run_a, _copy_with(run_a, tmp_path / "b", bump_three))
    assert REGRESSED not in {r.verdict for r in rows}


def test_model_missing_from_one_run_is_shown_not_hidden(run_a, tmp_path, capsys):
    run_b = _copy_with(run_a, tmp_path / "b", lambda p: p[p["model"] != "jumpy"])
    rows = compare_runs(run_a, run_b)
    assert {r.verdict for r in rows if r.model == "jumpy"} == {"only_in_a"}
    assert main(["compare", str(run_a), str(run_b)]) == 0
    assert "only in a" in capsys.readouterr().out


def test_bad_run_dirs_exit_2(run_a, tmp_path, capsys):
    assert main(["compare", str(run_a), str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    half = tmp_path / "half"
    half.mkdir()
    (half / rundir.MANIFEST).write_text(json.dumps({"status": "complete"}))
    assert main(["compare", str(run_a), str(half)]) == 2
    assert "pairs.parquet: missing" in capsys.readouterr().err
    assert main(["compare", str(run_a), str(run_a), "--metric", "no_such_metric"]) == 2
    assert "no_such_metric: no such column" in capsys.readouterr().err
    crashed = _copy_with(run_a, tmp_path / "crashed")
    m = json.loads((crashed / rundir.MANIFEST).read_text())
    m["status"] = "crashed"
    (crashed / rundir.MANIFEST).write_text(json.dumps(m))
    assert main(["compare", str(run_a), str(crashed)]) == 2
    assert main(["compare", str(run_a), str(run_a), "--threshold", "-1"]) == 2


def test_positive_control_reads_the_other_way_round(run_a, tmp_path):
    # Outputs that stop moving when the meaning changes are the regression (collapse);
    # moving more there is not.
    down = compare_runs(run_a, _copy_with(run_a, tmp_path / "down", _bump("steady", "positive_control", -0.2)))
    up = compare_runs(run_a, _copy_with(run_a, tmp_path / "up", _bump("steady", "positive_control", 0.2)))
    verdicts = lambda rows: {r.verdict for r in rows if r.model == "steady" and r.rung == "positive_control"}  # noqa: E731
    assert verdicts(down) == {REGRESSED} and exit_code(down) == 1
    assert verdicts(up) == {"improved"} and exit_code(up) == 0


# ---- model selection (issue 30) ----

def test_two_models_of_one_run_per_rung_with_mde_and_json(run_a, capsys):
    from harness.compare import A_BETTER, B_BETTER, NO_DIFFERENCE

    rows = compare_runs(run_a, None, models=("steady", "jumpy"))
    assert rows and all(r.model == "steady vs jumpy" for r in rows)
    assert {r.verdict for r in rows} <= {A_BETTER, B_BETTER, NO_DIFFERENCE, "too_few_prompts", "only_in_a", "only_in_b"}
    tested = [r for r in rows if r.n_prompts >= 6]
    assert tested and all(np.isfinite(r.mde) and r.mde >= 0 for r in tested)
    assert main(["compare", str(run_a), "--models", "steady,jumpy"]) == 0  # choosing a model never fails
    out = capsys.readouterr().out
    assert "A = steady, B = jumpy" in out and "MDE" in out
    assert main(["compare", str(run_a), "--models", "steady,jumpy", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "models" and len(doc["rows"]) == len(rows)
    for r, j in zip(rows, doc["rows"]):
        assert (j["variant"], j["rung"], j["length"], j["verdict"]) == (r.variant, r.rung, r.length, r.verdict)
        for f in ("change", "ci_low", "ci_high", "p_adj", "mde"):
            v = getattr(r, f)
            assert (j[f] is None) if np.isnan(v) else (j[f] == ("inf" if np.isinf(v) else v))


def test_a_model_against_itself_across_runs_is_no_difference(run_a, tmp_path):
    run_b = _copy_with(run_a, tmp_path / "b")
    rows = compare_runs(run_a, run_b, models=("steady", "steady"))
    assert {r.verdict for r in rows} == {"no_difference"} and all(r.change == 0.0 for r in rows)


def test_unknown_model_exits_2(run_a, capsys):
    assert main(["compare", str(run_a), "--models", "steady,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["compare", str(run_a)]) == 2  # one run without --models: nothing to compare


def test_nan_metric_is_dropped_and_counted(run_a, tmp_path):
    def edit(p: pd.DataFrame) -> pd.DataFrame:
        p = p.copy()
        m = (p["model"] == "steady") & (p["rung"] == "paraphrase")
        p.loc[p.index[m][:3], "emb_dist"] = np.nan
        return p
    run_b = _copy_with(run_a, tmp_path / "b", edit)
    rows = compare_runs(run_a, run_b)
    hit = [r for r in rows if r.model == "steady" and r.rung == "paraphrase"]
    assert sum(r.n_missing_b for r in hit) == 3 and all(r.n_shared == r.n_a - r.n_missing_b for r in hit)
    assert any(not r.paired for r in hit) and all(r.verdict == UNCHANGED for r in hit)


def test_change_sign_follows_the_prompts_not_the_pairs(run_a, tmp_path):
    # 14 prompts move up a little with one pair each; 2 prompts move down a lot with many pairs. Pair-weighted, the
    # mean falls; prompt-weighted (the test's unit) it rises: the printed change must agree with the test.
    rows = []
    for k in range(16):
        n = 1 if k < 14 else 20
        for j in range(n):
            rows.append({"prompt_id": f"p{k}", "pair_id": f"p{k}-{j}", "a": 0.5, "b": 0.55 if k < 14 else 0.2})
    df = pd.DataFrame(rows)
    from harness.compare import compare_cell
    a = df.assign(emb_dist=df["a"])
    b = df.assign(emb_dist=df["b"])
    t = compare_cell(a, b, "emb_dist")
    assert float((df["b"] - df["a"]).mean()) < 0 < t.change
    assert t.ci_low <= t.change <= t.ci_high
