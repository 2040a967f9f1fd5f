"""vLLM as the decode engine on the demo model tiny-chat (runs where vLLM is installed: `make test` in .venv-vllm).

One run decodes tiny-chat with vLLM (bf16@vllm) and with HF (bf16@hf), both read by
the teacher-forced probe, so wherever the two engines chose the same tokens every
column of pairs.parquet must be bit-identical between them, and the engine drift
exactly 0.
"""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; `make test` runs this file in .venv-vllm")

from harness.ladder.load import load_ladder  # noqa: E402
from harness.run.pipeline import RunConfig, run  # noqa: E402
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models  # noqa: E402
from harness.score.registry import PairScore  # noqa: E402
from tests.conftest import MODELS, ROOT, write  # noqa: E402
from tests.run.test_engines import LADDER  # noqa: E402


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    """bf16@vllm first, then bf16@hf in the same process, at the CLI's one-thread CPU default."""
    import torch

    tmp = tmp_path_factory.mktemp("vllm")
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    cfg = RunConfig(models=tuple(models), ladder=load_ladder(write(tmp / "l.yaml", LADDER)), out=tmp / "runs",
                    lengths=(8, 32), variants=("bf16", "bf16@hf"), engine="vllm", capture="probe", progress=False,
                    # Full prompt-end rows: the drift between engines then has its JS/KL (without them it is NaN).
                    cache_dir=tmp / "cache", store_full_dist=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield run(cfg)
    finally:
        torch.set_num_threads(before)


def test_vllm_run_is_deterministic_and_recorded(vllm_run):
    assert vllm_run.exit_code == 0
    manifest = json.loads((vllm_run.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["determinism"]["verdict"] == "deterministic"
    assert manifest["determinism"]["per_model"]["tiny-chat/bf16@vllm"] == "deterministic"
    rec = {m["variant"]: m for m in manifest["models"]}
    eng = rec["bf16@vllm"]["engine"]
    assert eng["engine"] == "vllm" and eng["version"].startswith("vllm")
    assert eng["args"]["enable_prefix_caching"] is False and eng["args"]["dtype"] == "bfloat16"
    assert eng["batch_invariant"] is False and "CPU" in eng["batch_invariant_note"]
    assert eng["attention_backend"] and not eng["attention_backend"].startswith("unknown")
    assert eng["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert rec["bf16@vllm"]["capture"] == "probe" and manifest["libraries"]["vllm"]
    # vLLM's no-op torch.set_num_threads is gone after the engine: the HF cell after it still sets threads.
    import torch

    assert torch.set_num_threads is torch._C.set_num_threads
    assert [m["variant"] for m in manifest["models"]] == ["bf16@vllm", "bf16@hf"]
    assert rec["bf16@vllm"]["engine"]["torch_threads"] == rec["bf16@hf"]["engine"]["torch_threads"] == 1
    # The closed-form head was checked against the probe's own logits (vLLM gives none to check against).
    assert rec["bf16@vllm"]["trace_head_check"]["ok"] is True


def test_vllm_pairs_have_the_hf_columns_and_meaning(vllm_run):
    pairs = pd.read_parquet(vllm_run.run_dir / "pairs.parquet")
    assert list(pairs.columns) == [f.name for f in dataclasses.fields(PairScore)]
    gens = pd.read_parquet(vllm_run.run_dir / "generations.parquet")
    ids = {v: {(r.prompt_key, r.replicate): tuple(r.gen_ids) for r in g.itertuples()} for v, g in gens.groupby("variant")}
    v, h = ids["bf16@vllm"], ids["bf16@hf"]
    same = {k for k in v if v[k] == h.get(k)}
    assert len(same) >= 0.9 * len(v)  # measured on tiny-chat, bf16, CPU: every output
    if len(same) == len(v):  # same tokens -> the probe makes every column identical, bit for bit
        cols = [c for c in pairs.columns if pd.api.types.is_numeric_dtype(pairs[c])]
        a = pairs[pairs.variant == "bf16@vllm"].sort_values(["pair_id", "length"])[cols].to_numpy(dtype=float)
        b = pairs[pairs.variant == "bf16@hf"].sort_values(["pair_id", "length"])[cols].to_numpy(dtype=float)
        np.testing.assert_array_equal(a, b)
    from harness.score.pairs import divergence_columns
    from harness.score.registry import optional_columns

    drift = pd.read_parquet(vllm_run.run_dir / "drift.parquet")
    d = drift[(drift.variant == "bf16@vllm") & drift.pair_id.str[len("drift/"):].isin({k for k, rep in same if rep == 0})]
    assert len(d) > 0
    for col in divergence_columns():
        if col in optional_columns():  # the twin divergence: a pair metric, not read between variants (NaN)
            continue
        assert (d[col] == 0).all(), col


def test_engine_drift_and_agreement_in_the_report(vllm_run):
    drift = pd.read_parquet(vllm_run.run_dir / "drift.parquet")
    d = drift[drift.variant == "bf16@vllm"]
    assert len(d) > 0 and set(d.edit_kind) == {"bf16@hf->bf16@vllm"}
    summary = json.loads((vllm_run.run_dir / "summary.json").read_text())
    row = [r for r in summary["drift"] if r["variant"] == "bf16@vllm"][0]
    assert row["reference"] == "bf16@hf" and row["drift"] is not None
    eng = {r["variant"]: r for r in summary["engines"]}["bf16@vllm"]
    assert eng["engine"] == "vllm" and eng["capture"] == "probe" and eng["probed"] == eng["outputs"] > 0
    report = (vllm_run.run_dir / "report.md").read_text()
    assert "## Engines and probe agreement" in report and "| tiny-chat | bf16@vllm | vllm | vllm" in report
    assert "| tiny-chat | bf16@vllm | 8 | bf16@hf |" in report  # the two-axis (drift) table


def test_a_model_vllm_refuses_fails_with_one_line(tmp_path):
    """head_dim 16 is refused by vLLM's CPU attention: that model fails (exit 3) with vLLM's reason on one line."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src = MODELS / "tiny-chat"
    dst = tmp_path / "hd16"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
    cfg = AutoConfig.from_pretrained(dst)
    cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 64, 4, 2, 16
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained(dst)
    ladder = write(tmp_path / "l.yaml", LADDER)
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--models", str(dst), "--engine", "vllm",
                        "--ladder", str(ladder), "--lengths", "8", "--out", str(tmp_path / "runs"), "--no-progress",
                        "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
    failed = [line for line in p.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, p.stdout[-2000:]
    # vLLM 0.32 CPU accepts the model at start-up and refuses at the first attention call.
    assert failed[0].startswith("FAILED hd16 (bf16@vllm): EngineUnavailable: vLLM ")
    assert "Unsupported CPU attention configuration: head_dim=16" in failed[0]
    assert "Traceback" not in p.stdout
