"""The report's variance and ranking sections, and compare --models' ranking stability, on the synthetic run of
tests/report/test_report_html.py (three models, a second variant)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.schema import Summary
from tests.report.test_report_html import MIN_PLOT_STD, build_synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_synthetic_run(tmp_path_factory.mktemp("vardec"))


def test_summary_holds_both_sections_validated_by_the_schema(run):
    doc = json.loads((run / "summary.json").read_text())
    Summary.model_validate(doc)
    var = {r["outcome"]: r for r in doc["variance"]}
    comps = {c["factor"] for c in var["emb_dist"]["components"]}
    # Three models, bf16 and int4 (one engine): the engine has one level and is said, not given 0.
    assert {"prompt", "rung", "model", "variant", "residual"} <= comps and "engine" not in comps
    assert var["emb_dist"]["left_out"]["engine"].startswith("one level (hf)")
    assert abs(sum(c["share"] for c in var["emb_dist"]["components"]) - 1.0) < 1e-9
    units = {u for r in doc["ranking"] for u in r["units"]}
    assert units == {"steady/bf16", "steady-twin/bf16", "jumpy/bf16", "jumpy/int4"}


def test_report_shows_the_table_the_figure_and_the_ranking(run):
    md = (run / "report.md").read_text()
    assert "## Where the variance comes from" in md and "## Does the ranking survive?" in md
    assert "one level (hf): left out, not 0" in md
    page = (run / "report.html").read_text()
    m = re.search(r'<h2 id="fig_variance">.*?src="data:image/png;base64,([^"]+)"', page, re.S)
    assert m, "variance figure missing"
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("L"), dtype=float)
    assert img.std() > MIN_PLOT_STD
    assert page.index('id="variance"') < page.index('id="fig_variance"')


def test_compare_models_prints_ranking_stability_in_text_and_json(run, capsys):
    assert main(["compare", str(run), "--models", "steady,jumpy"]) == 0
    out = capsys.readouterr().out
    assert "ranking stability:" in out and "P(same order)" in out and "steady vs jumpy" in out
    assert main(["compare", str(run), "--models", "steady,jumpy", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["ranking"]
    assert rows and {r["measure"] for r in rows} == {"accuracy", "distance"}
    assert all(r["units"] == ["jumpy", "steady"] and r["variant"] == "bf16" for r in rows)
    dist = [r for r in rows if r["measure"] == "distance" and "not_computed" not in r]
    # jumpy moves more than steady on every rung of the synthetic run: the order holds everywhere.
    assert dist and all(r["pairs"][0]["verdict"] == "holds" for r in dist)
