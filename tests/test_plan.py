"""`stabprobe plan`: the run's minimum detectable differences and the prompts a difference needs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.summary.power import mde, prompts_needed


def _run_dir(tmp_path, n_prompts=10):
    rng = np.random.default_rng(5)
    rows = []
    for k in range(n_prompts):
        for j in range(2):
            for model, shift in (("a", 0.0), ("b", 0.1)):
                v = np.nan if (model, k, j) == ("a", 0, 0) else 0.3 + shift + rng.normal(0, 0.05)
                rows.append({"model": model, "variant": "bf16", "rung": "typo", "length": 32, "pair_id": f"q{k}-{j}",
                             "prompt_id": f"q{k}", "emb_dist": v, "edit_kind": "keyboard_typo"})
    pd.DataFrame(rows).to_parquet(tmp_path / "pairs.parquet")
    return tmp_path


def test_plan_json_matches_the_closed_form(tmp_path, capsys):
    d = _run_dir(tmp_path)
    assert main(["plan", str(d), "--difference", "0.02", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cells = {r["model"]: r for r in out["rows"]}
    assert set(cells) == {"a", "b", "a vs b"}
    assert cells["a"]["n_missing"] == 1 and cells["a"]["n_prompts"] == 10  # the NaN is counted, not a 0
    for r in out["rows"]:
        assert r["mde"] == pytest.approx(mde(r["prompt_sd"], r["n_prompts"]))
        assert r["prompts_needed"] == prompts_needed(0.02, r["prompt_sd"])
    assert cells["a vs b"]["prompts_needed"] > 10  # 0.02 is below this run's MDE


def test_plan_refuses_bad_input_with_one_line(tmp_path, capsys):
    d = _run_dir(tmp_path)
    assert main(["plan", str(d), "--metric", "edit_kind"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pairs.parquet" in err and "edit_kind" in err
    assert main(["plan", str(d), "--difference", "0"]) == 2
    assert main(["plan", str(tmp_path / "nowhere")]) == 2
