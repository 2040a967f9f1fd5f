"""`stabprobe stretch` and `stabprobe floor` end to end on the demo models (few prompts, few tokens)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.stretch_study.floor import FloorConfig, run_floor
from harness.stretch_study.stretch import StretchConfig, run_stretch

PAIRS = [
    {"id": "same", "category": "control_identical", "prompt_a": "Reverse the word apple.", "prompt_b": "Reverse the word apple."},
    {"id": "space", "category": "noop_format", "prompt_a": "Reverse the word apple.", "prompt_b": "Reverse the word apple. "},
    {"id": "punct", "category": "punctuation", "prompt_a": "Reverse the word apple.", "prompt_b": "Reverse the word apple!"},
    {"id": "other", "category": "positive_control", "prompt_a": "Reverse the word apple.", "prompt_b": "Add 2 and 3."},
]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    path = tmp_path_factory.mktemp("ladder") / "pairs.json"
    path.write_text(json.dumps(PAIRS), encoding="utf-8")
    torch.set_num_threads(1)
    return load_ladder(path)


def _models(names):
    return tuple(resolve_models(names, load_registry(DEFAULT_REGISTRY)))


def test_stretch_study_writes_tables_and_exact_zeros(ladder, tmp_path):
    res = run_stretch(StretchConfig(models=_models("tiny-chat"), ladder=ladder, out=tmp_path, stretch_prompts=1,
                                    max_new_tokens=6, tol=1e-6))
    assert res.exit_code == 0
    d = res.run_dir
    for f in ("stretch_profiles.parquet", "stretch_layers.parquet", "stretch_steps.parquet", "stretch_pairs.parquet",
              "stretch_summary.json", "stretch.md", "stretch.html", "stretch_profiles.png", "stretch_layers.png",
              "stretch_generation.png", "manifest.json"):
        assert (d / f).is_file(), f
    prof = pd.read_parquet(d / "stretch_profiles.parquet")
    assert prof["layer"].nunique() == 6  # embeddings, 4 blocks, final norm
    assert (prof[prof["rung"] == "identical"]["rel_dist"] == 0).all()
    # The template ends every prompt with the same assistant header: the prompt-end embeddings are equal and the
    # difference is born in block 1 (attention to the edited positions).
    assert (prof[prof["layer"] == 0]["rel_dist"] == 0).all()
    assert (prof[(prof["layer"] == 1) & (prof["rung"] != "identical")]["rel_dist"] > 0).all()
    layers = pd.read_parquet(d / "stretch_layers.parquet")
    assert set(layers["map"]) == {"block_1", "block_2", "block_3", "block_4", "final_norm", "product", "product_norm"}
    assert layers["converged"].all() and (layers["iterations"] >= 2).all()
    prod = layers[layers["map"] == "product"].iloc[0]
    assert prod["sigma"] <= prod["sigma_bound"] * (1 + 1e-6)
    pairs = pd.read_parquet(d / "stretch_pairs.parquet")
    assert set(pairs["rung"]) == {"noop_format", "punctuation", "positive_control"}  # identical has no trajectory
    steps = pd.read_parquet(d / "stretch_steps.parquet")
    assert steps.groupby("pair_id")["step"].max().le(6).all()
    s = json.loads((d / "stretch_summary.json").read_text())
    m = s["models"]["tiny-chat"]
    assert m["identical_rung_exact_zero"] is True and m["stretching"]["product"]["bound_holds"] is True
    assert "| noop_format |" in (d / "stretch.md").read_text()


def test_floor_study_reference_is_exactly_zero_and_variants_drift(ladder, tmp_path):
    res = run_floor(FloorConfig(models=_models("tiny-chat"), ladder=ladder, out=tmp_path, variants=("int4", "quanto-int2"),
                                max_new_tokens=6, stretch_prompts=1))
    assert res.exit_code == 0
    d = res.run_dir
    for f in ("floor.parquet", "floor_contrast.parquet", "floor_models.parquet", "floor_stretch.parquet", "floor_prompts.parquet",
              "floor_pairs.parquet", "floor_summary.json", "floor.md", "floor.html", "floor.png"):
        assert (d / f).is_file(), f
    t = pd.read_parquet(d / "floor.parquet").set_index("variant")
    assert list(t.index) == ["bf16", "int4", "quanto-int2"]  # the reference is added and comes first
    ref = t.loc["bf16"]
    assert ref["d_tokens"] == 0 and ref["kl_ref_tokens"] == 0 and ref["kl_var_tokens"] == 0 and ref["same_top1_ref_tokens"] == 1
    for v in ("int4", "quanto-int2"):
        assert np.isfinite(t.loc[v, ["p_tokens", "d_tokens", "kl_ref_tokens", "kl_var_tokens"]].astype(float)).all()
        assert t.loc[v, "kl_ref_tokens"] > 0 and t.loc[v, "kl_var_tokens"] > 0
    assert t.loc["quanto-int2", "bits"] == 2 and t.loc["int4", "n_pairs"] == 2  # noop + punctuation: P's pairs
    assert (t["identical_repeat"] == 0).all()  # one thread, one sequence: the repeated decode is exact
    c = pd.read_parquet(d / "floor_contrast.parquet").set_index("variant")
    assert list(c.index) == ["int4", "quanto-int2"] and (c["kl_baseline"] == "bf16").all()
    models = pd.read_parquet(d / "floor_models.parquet")
    assert np.isfinite(models["stretch_product_sigma_rel"]).all() and np.isfinite(models["drift_growth_kl"]).all()
    s = json.loads((d / "floor_summary.json").read_text())
    assert s["rank_correlation"]["trained"]["drift_growth_tokens"]["rho"] is None  # one model: undefined, and it says so
    assert "cannot say whether models that stretch less drift less" in (d / "floor.md").read_text()


@pytest.mark.parametrize("argv, field", [
    (["floor", "--variants", "bf16,int3"], "--variants"),
    (["stretch", "--max-prompts", "0"], "--max-prompts"),
    (["stretch", "--tol", "2"], "--tol"),
])
def test_bad_flags_exit_2_and_write_nothing(tmp_path, capsys, argv, field):
    out = tmp_path / "runs"
    rc = main([*argv, "--models", "tiny-chat", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and field in err
    assert not out.exists() or not any(out.iterdir())
