"""FormatSpread-style spread next to the rung means: by brute force, and in a real demo run's report."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.pipeline import RunConfig, run
from harness.summary.build import prompt_spread
from harness.summary.stats import cluster_bootstrap_ci
from tests.conftest import write


def test_spread_is_max_minus_min_per_prompt_averaged_over_prompts_with_two_variants():
    rng = np.random.default_rng(7)
    rows = [("p1", 0.10), ("p1", 0.40), ("p1", 0.25), ("p2", 0.30), ("p2", np.nan), ("p2", 0.05),
            ("p3", 0.20), ("p4", np.nan), ("p4", np.nan)]
    rows += [(f"q{i}", float(v)) for i in range(5) for v in rng.random(3)]
    cell = pd.DataFrame(rows, columns=["prompt_id", "emb_dist"])
    brute = []
    for pid, vals in itertools.groupby(sorted(rows, key=lambda r: r[0]), key=lambda r: r[0]):
        finite = [v for _, v in vals if v == v]
        if len(finite) >= 2:
            brute.append(max(a - b for a in finite for b in finite))
    got = prompt_spread(cell)
    assert got["n_prompts"] == len(brute) == 7
    assert got["n_prompts_one_variant"] == 2  # p3 has one variant, p4 none measured: counted, not taken as 0
    assert got["mean"] == pytest.approx(np.mean(brute), abs=1e-15)
    assert got["ci95"] == list(cluster_bootstrap_ci(brute, sorted(p for p in {r[0] for r in rows} if p not in ("p3", "p4"))))
    empty = prompt_spread(cell[cell.prompt_id == "p3"])
    assert empty["n_prompts"] == 0 and np.isnan(empty["mean"]) and empty["n_prompts_one_variant"] == 1


LADDER = """ladder: formats
edit_kinds: [format, option_order, keyboard_typo, lowercase_all]
prompts:
  - id: quiz
    topic: quiz
    text: "Question: Which city is the capital of Italy?\\nOptions:\\nA. Milan\\nB. Rome\\nC. Naples\\nD. Turin\\nAnswer:"
  - id: review
    topic: review
    text: "Review: The soup was cold and the waiter ignored us.\\nSentiment:"
"""


def test_a_demo_run_reports_the_new_rungs_with_their_spread(tmp_path):
    ladder = load_ladder(write(tmp_path / "formats.yaml", LADDER))
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    result = run(RunConfig(models=tuple(models), ladder=ladder, out=tmp_path / "runs", lengths=(16,), progress=False))
    assert result.exit_code == 0
    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    cells = {c["rung"]: c for c in summary["cells"]}
    assert {"format", "option_order", "typo", "casing"} <= set(cells)
    fmt = cells["format"]
    assert fmt["n_pairs"] == 8 and fmt["spread"]["n_prompts"] == 2  # quiz: 5 format pairs, review: 3
    pairs = pd.read_parquet(result.run_dir / "pairs.parquet")
    f = pairs[pairs.rung == "format"].groupby("prompt_id")["emb_dist"].agg(lambda v: v.max() - v.min())
    assert fmt["spread"]["mean"] == pytest.approx(f.mean(), abs=1e-12)
    assert cells["option_order"]["spread"]["n_prompts"] == 0  # one pair per prompt: no spread, and said so
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert "spread over a prompt's variants" in report
    row = next(line for line in report.splitlines() if line.startswith("| tiny-chat | bf16 | format |"))
    assert f"({fmt['spread']['n_prompts']})" in row
    exposure = {e["edit_kind"] for e in summary["exposure"]}
    assert {"format_separator", "format_enumeration", "option_order", "keyboard_typo", "lowercase_all"} <= exposure
