"""Runs that drop everything, models that emit NaN, resumes that drift, broken run directories (issue 17)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from harness.core import rundir
from harness.cli import main
from harness.ladder.load import load_ladder
from harness.models.loading import load_model
from harness.run.pipeline import RunConfig, run
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from tests.conftest import demo_ladder, write
from tests.report.test_report_html import build_synthetic_run

LADDER = demo_ladder("runfaults", ["trailing_space"])


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _manifest(run_dir) -> dict:
    return json.loads((run_dir / rundir.MANIFEST).read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real finished run of tiny-chat, made without a cache."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "runs"
    assert main(["run", "--models", "tiny-chat", "--ladder", str(write(tmp / "l.yaml", LADDER)), "--lengths", "8",
                 "--out", str(out), "--no-progress", "--no-cache"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_run_that_drops_every_pair_ends_empty_with_its_audit(tmp_path, capsys):
    # Defect 1: KeyError 'prompt_key' inside, exit 3, the audit lost and the run marked complete.
    out = tmp_path / "r"
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(write(tmp_path / "l.yaml", LADDER)),
               "--lengths", "100000", "--out", str(out), "--no-progress", "--no-cache"])
    captured = capsys.readouterr()
    assert rc == 3 and "Traceback" not in captured.err
    (run_dir,) = out.iterdir()
    m = _manifest(run_dir)
    assert m["status"] == "empty" and m["models"][0]["status"] == "empty"
    assert "exceeds_context" in m["error"] and "nothing scored" in captured.out and "exceeds_context" in captured.out
    audit = pd.read_parquet(run_dir / "audit.parquet")
    n_pairs = len(json.loads((run_dir / "ladder.json").read_text())["pairs"])
    assert len(audit) == n_pairs and not audit["kept"].any() and set(audit["reason"]) == {"exceeds_context"}
    assert pd.read_parquet(run_dir / "pairs.parquet").empty


def _nan_loader(entry, variant):
    """tiny-chat with one NaN in its final norm: every hidden state and logit after it is NaN (as fp16 overflow gives)."""
    loaded = load_model(entry, "bf16")
    with torch.no_grad():
        loaded.model.model.norm.weight[0] = float("nan")
    return loaded


def test_nan_weights_fail_the_cell_as_numerics_not_stable(tmp_path):
    # Defect 9: every distance 0, positive control included, verdict "deterministic", exit 0.
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    result = run(RunConfig(models=(entry,), ladder=load_ladder(write(tmp_path / "l.yaml", LADDER)),
                           out=tmp_path / "runs", lengths=(8,), progress=False, loader=_nan_loader))
    m = _manifest(result.run_dir)
    (rec,) = m["models"]
    assert result.exit_code == 3 and rec["status"] == "failed-numerics"
    assert rec["numerics"]["step"] == 0 and rec["numerics"]["what"] == "hidden states"
    assert rec["numerics"]["prompt"].startswith("prompt ")
    assert rec["error"].startswith("non-finite hidden states at step 0 of prompt ")
    assert pd.read_parquet(result.run_dir / "pairs.parquet").empty and m["determinism"]["verdict"] != "deterministic"


def test_resume_keeps_the_recorded_cache_setting_and_refuses_conflicts(finished, tmp_path, capsys, monkeypatch):
    # Defect 10: a --no-cache run, resumed, wrote into the default cache; weak: other flags were silently ignored.
    run_dir = tmp_path / "interrupted"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "cells" / "tiny-chat--bf16")
    m = _manifest(run_dir)
    m["status"] = "interrupted"
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, m)
    default_cache = tmp_path / "default-cache"
    monkeypatch.setenv("STABPROBE_CACHE", str(default_cache))
    capsys.readouterr()
    rc = main(["run", "--resume", str(run_dir), "--cache", str(tmp_path / "other"), "--lengths", "16"])
    assert rc == 2
    assert _err(capsys).startswith("stabprobe: error: --resume: --lengths, --cache: a resumed run keeps its recorded")
    rc = main(["run", "--resume", str(run_dir), "--no-cache", "--lengths", "8", "--no-progress"])  # = recorded: fine
    assert rc == 0 and _manifest(run_dir)["status"] == "complete" and _manifest(run_dir)["config"]["cache_dir"] is None
    assert not default_cache.exists() or not any(default_cache.rglob("*"))  # nothing written to any cache
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "pairs.parquet"), pd.read_parquet(finished / "pairs.parquet"))


@pytest.mark.parametrize("damage, field", [
    (lambda p: p.write_text(p.read_text()[:40]), "manifest.json: (top level): not valid JSON"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "status": 5})), "manifest.json: status: "),
    (lambda p: p.write_text("[1, 2]"), "manifest.json: (top level): expected a JSON object, got list"),
])
def test_broken_manifest_is_exit_2_for_report_resume_merge(finished, tmp_path, capsys, damage, field):
    # Defect 5: tracebacks from `run --resume` and `report`.
    run_dir = tmp_path / "broken"
    shutil.copytree(finished, run_dir)
    damage(run_dir / rundir.MANIFEST)
    for argv in (["report", str(run_dir)], ["run", "--resume", str(run_dir)],
                 ["merge", str(run_dir), "--out", str(tmp_path / "m")]):
        assert main(argv) == 2, argv
        assert field in _err(capsys)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_wrong_typed_config_is_named(finished, tmp_path, capsys):
    run_dir = tmp_path / "typed"
    shutil.copytree(finished, run_dir)
    m = _manifest(run_dir)
    m["status"] = "interrupted"
    m["config"]["lengths"] = ["8"]
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, m)
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert f"{run_dir / rundir.MANIFEST}: config.lengths[0]: expected an integer (got '8')" in _err(capsys)


def test_garbage_pairs_parquet_is_exit_2_for_report(finished, tmp_path, capsys):
    # Defect 6: a traceback from `report`.
    run_dir = tmp_path / "garbage"
    shutil.copytree(finished, run_dir)
    (run_dir / rundir.PAIRS).write_bytes(b"PAR1" + b"\x00garbage" * 50)
    assert main(["report", str(run_dir)]) == 2
    assert f"{run_dir / rundir.PAIRS}: (file): cannot be read as parquet" in _err(capsys)
    assert main(["compare", str(finished), str(run_dir)]) == 2
    assert "cannot be read as parquet" in _err(capsys)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return build_synthetic_run(tmp_path_factory.mktemp("synthetic"))


def test_compare_refuses_different_ladders_and_nothing_in_common(synthetic, tmp_path, capsys):
    # Weak: exit 1 "REGRESSED" on unpaired data over different ladders; exit 0 "0 regressed" with no model in common.
    other = tmp_path / "other-ladder"
    shutil.copytree(synthetic, other)
    m = _manifest(other)
    m["config"]["ladder"] = {**m["config"]["ladder"], "name": "another", "sha256": "f" * 64}
    rundir.atomic_write_json(other / rundir.MANIFEST, m)
    assert main(["compare", str(synthetic), str(other)]) == 2
    assert "config.ladder: runs used different ladders (synthetic sha256 None in A, another sha256 ffffffffffff in B)" \
        in _err(capsys)
    renamed = tmp_path / "renamed"
    shutil.copytree(synthetic, renamed)
    pairs = pd.read_parquet(renamed / rundir.PAIRS)
    pairs["model"] = "someone-else"
    rundir.atomic_write_parquet(renamed / rundir.PAIRS, pairs)
    assert main(["compare", str(synthetic), str(renamed)]) == 2
    err = _err(capsys)
    assert "model x variant: no model x variant x rung x length in both runs" in err and "someone-else/bf16" in err


def test_merge_of_damaged_cell_files_is_exit_2(finished, tmp_path, capsys):
    cell = tmp_path / "cellrec"
    shutil.copytree(finished, cell)
    (cell / "cells" / "tiny-chat--bf16" / "cell.json").write_text('{"name": "tiny-chat", "sta')
    assert main(["merge", str(cell), "--out", str(tmp_path / "m1")]) == 2
    assert "cells/tiny-chat--bf16/cell.json: (top level): not valid JSON" in _err(capsys)
    table = tmp_path / "celltable"
    shutil.copytree(finished, table)
    (table / "cells" / "tiny-chat--bf16" / "pairs.parquet").write_bytes(b"not parquet")
    assert main(["merge", str(table), "--out", str(tmp_path / "m2")]) == 2
    assert "cells/tiny-chat--bf16/pairs.parquet: (file): cannot be read as parquet" in _err(capsys)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()  # nothing half-written
