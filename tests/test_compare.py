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
    assert all(r.change == pytest.approx(0.2) and r.ci_low > 0 for r in hit)
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
