"""The twin divergence in a run: its columns in pairs.parquet, exact zeros on the identical rung, the cell's note, the
report's columns, a cached re-run, and a cell that cannot compute it (NaN, not 0, and no verdict from it)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.pipeline import RunConfig, run
from harness.score.registry import optional_columns
from harness.summary.determinism import determinism_verdict
from tests.conftest import demo_ladder, write

LADDER = demo_ladder("twin", ["trailing_space", "final_question", "parenthesized_word"], in_domain=True,
                     paraphrase=True)
TWIN = [c for c in optional_columns() if c.startswith("twin_")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twin")
    ladder = load_ladder(write(tmp / "twin.yaml", LADDER))
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    cfg = dict(models=tuple(models), ladder=ladder, out=tmp / "runs", lengths=(8, 24), progress=False,
               variants=("bf16",), cache_dir=tmp / "cache")
    return run(RunConfig(**cfg, twin=True)), run(RunConfig(**cfg, twin=True)), run(RunConfig(**cfg))


def test_columns_zeros_note_and_report(runs):
    first, _, _ = runs
    pairs = pd.read_parquet(first.run_dir / "pairs.parquet")
    assert set(TWIN) <= set(pairs.columns)
    ident = pairs[pairs["rung"] == "identical"]
    assert len(ident) and (ident[[c for c in TWIN if "first_top1" not in c]] == 0).all().all()
    assert ident["twin_first_top1_ab"].isna().all()  # the top-1 never changes: missing, never step 0
    moved = pairs[pairs["rung"] != "identical"]
    assert moved["twin_kl_ab"].notna().all() and (moved["twin_kl_ab"] > 0).any()
    cell = json.loads((first.run_dir / "cells" / "tiny-chat--bf16" / "cell.json").read_text())
    assert cell["twin"].startswith("ok: ") and cell["timings_s"]["twin"] >= 0
    report = (first.run_dir / "report.md").read_text()
    assert "twin KL (a's output)" in report and "twin top-1 change" in report
    assert "twin_kl_ab" in (first.run_dir / "report.html").read_text()
    assert first.summary["determinism"]["verdict"] == "deterministic"


def test_a_cached_rerun_gives_the_same_values(runs):
    first, second, _ = runs
    a = pd.read_parquet(first.run_dir / "pairs.parquet")[TWIN].to_numpy()
    b = pd.read_parquet(second.run_dir / "pairs.parquet")[TWIN].to_numpy()
    np.testing.assert_array_equal(a, b)  # NaN where NaN, equal elsewhere
    cell = json.loads((second.run_dir / "cells" / "tiny-chat--bf16" / "cell.json").read_text())
    assert cell["weights_loaded"] is False


def test_a_cell_without_the_twin_keeps_its_verdict(runs):
    """A vLLM or llama.cpp cell leaves the twin columns NaN: the determinism verdict reads the rest."""
    first, _, _ = runs
    pairs = pd.read_parquet(first.run_dir / "pairs.parquet")
    pairs[TWIN] = math.nan
    assert determinism_verdict(pairs)["verdict"] == "deterministic"
    pairs.loc[pairs["rung"] == "identical", "twin_kl_ab"] = 1e-7  # a twin pass that was not reproducible
    assert determinism_verdict(pairs)["verdict"] == "nondeterministic"


def test_without_the_flag_the_columns_are_missing_and_said_so(runs):
    first, _, off = runs
    pairs = pd.read_parquet(off.run_dir / "pairs.parquet")
    assert set(TWIN) <= set(pairs.columns) and pairs[TWIN].isna().all().all()  # missing, never 0
    cell = json.loads((off.run_dir / "cells" / "tiny-chat--bf16" / "cell.json").read_text())
    assert cell["twin"].startswith("not computed: --twin not given") and "twin" not in cell["timings_s"]
    header = [ln for ln in (off.run_dir / "report.md").read_text().splitlines() if "| hidden dist |" in ln]
    assert header and "twin" not in header[0]
    assert "twin_kl_ab" not in (off.run_dir / "report.html").read_text()
    assert off.summary["determinism"]["verdict"] == "deterministic"
    manifest = json.loads((off.run_dir / "manifest.json").read_text())
    assert manifest["config"]["twin"] is False
    # the scored tables of a run with the flag are not those of a run without it (cache keys differ)
    assert cell["results_key"] != json.loads(
        (first.run_dir / "cells" / "tiny-chat--bf16" / "cell.json").read_text())["results_key"]
