"""Engine selection, variant spelling, --capture probe end to end, and a missing vLLM (no vLLM needed here)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from harness.score.drift import reference_of
from harness.ladder.load import load_ladder
from harness.run.pipeline import RunConfig, run, variants_for
from harness.models.registry import DEFAULT_REGISTRY, ModelEntry, load_registry, resolve_models
from harness.models.variants import base_name, engine_of, parse_variant, with_engine
from tests.conftest import ROOT, demo_ladder, write

LADDER = demo_ladder("engines", ["trailing_space", "final_question"], in_domain=True, paraphrase=True)


def test_variant_names_carry_an_engine():
    assert parse_variant("bf16@vllm").engine == "vllm" and parse_variant("bf16").engine is None
    assert parse_variant("int4-nothink@hf").template_overrides == {"enable_thinking": False}
    assert (with_engine("bf16", "vllm"), with_engine("bf16", "hf"), with_engine("bf16@hf", "vllm")) == \
        ("bf16@vllm", "bf16", "bf16@hf")
    assert (engine_of("fp32@vllm"), engine_of("fp32"), base_name("bf16-nothink@vllm")) == ("vllm", "hf", "bf16-nothink")
    for bad in ("bf16@", "bf16@tgi", "@vllm", "bf16@vllm-nothink"):
        with pytest.raises(ValueError, match="unknown variant"):
            parse_variant(bad)


def test_reference_of_an_engine_variant_is_bf16_on_hf():
    assert reference_of("bf16@vllm", {"bf16", "bf16@vllm"}) == "bf16"
    assert reference_of("bf16@vllm", {"bf16@hf", "bf16@vllm"}) == "bf16@hf"
    assert reference_of("bf16-nothink@vllm", {"bf16-nothink@hf"}) == "bf16-nothink@hf"
    assert reference_of("int8") == "bf16"


def test_engine_resolution_order_flag_then_registry():
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    vllm_entry = entry.model_copy(update={"engine": "vllm", "variants": ("bf16", "bf16@hf")})
    ladder = load_ladder(ROOT / "ladders" / "default.yaml")
    assert variants_for(RunConfig(models=(entry,), ladder=ladder), entry) == ("bf16",)
    assert variants_for(RunConfig(models=(entry,), ladder=ladder, engine="vllm"), entry) == ("bf16@vllm",)
    assert variants_for(RunConfig(models=(vllm_entry,), ladder=ladder), vllm_entry) == ("bf16@vllm", "bf16@hf")
    assert variants_for(RunConfig(models=(vllm_entry,), ladder=ladder, engine="hf"), vllm_entry) == ("bf16", "bf16@hf")
    with pytest.raises(ValueError):
        ModelEntry(name="x", source="./x", engine="tgi")


def test_capture_probe_run_end_to_end(tmp_path):
    """The HF engine read by the probe: deterministic, every output reproduced, same columns as the default."""
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    ladder = load_ladder(write(tmp_path / "l.yaml", LADDER))
    res = run(RunConfig(models=tuple(models), ladder=ladder, out=tmp_path / "runs", lengths=(8, 24), progress=False,
                        capture="probe"))
    assert res.exit_code == 0
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["determinism"]["verdict"] == "deterministic"
    rec = manifest["models"][0]
    assert (rec["capture"], rec["engine"]["engine"], rec["engine"]["attention_backend"]) == ("probe", "hf", "eager")
    assert rec["probe"]["probed_outputs"] == rec["probe"]["outputs_fully_agreeing"] > 0
    gens = pd.read_parquet(res.run_dir / "generations.parquet")
    assert set(gens.capture) == {"probe"} and (gens.probe_agreement == 1.0).all()
    assert (gens.probe_first_disagreement == -1).all() and gens.probe_margin_at_disagreement.isna().all()
    from harness.score.registry import PairScore
    import dataclasses

    assert list(pd.read_parquet(res.run_dir / "pairs.parquet").columns) == [f.name for f in dataclasses.fields(PairScore)]
    report = (res.run_dir / "report.md").read_text()
    assert "## Engines and probe agreement" in report
    n = len(gens)
    assert f"| tiny-chat | bf16 | hf | transformers " in report and f"| probe | {n} | {n}/{n} |" in report


def test_missing_vllm_fails_the_model_with_one_line(tmp_path):
    """No vLLM: the cell fails with a one-line reason, the run finishes, exit 3, no traceback."""
    ladder = write(tmp_path / "l.yaml", LADDER)
    code = ("import sys; sys.modules['vllm'] = None\n"  # an absent package, whatever this environment has
            "from harness.cli import main\n"
            f"sys.exit(main(['run', '--models', 'tiny-chat', '--engine', 'vllm', '--ladder', {str(ladder)!r}, "
            f"'--lengths', '8', '--out', {str(tmp_path / 'runs')!r}, '--no-progress', '--no-cache']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 3, p.stderr[-2000:]
    failed = [line for line in p.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED tiny-chat (bf16@vllm): EngineUnavailable: vLLM is not installed")
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    rec = json.loads((run_dir / "manifest.json").read_text())["models"][0]
    assert rec["status"] == "failed" and "stabprobe[vllm]" in rec["error"]


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "tgi"], "--engine"),
    (["--variants", "bf16@tgi"], "bf16@tgi"),
    (["--capture", "logits"], "--capture"),
])
def test_bad_engine_input_exits_2(argv, needle, capsys):
    from harness.cli import main

    try:
        code = main(["run", "--models", "tiny-chat", "--out", "/nonexistent-i20", *argv])
    except SystemExit as exc:  # argparse's choices
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_batch_invariance_records_what_was_asked_on_cpu(monkeypatch):
    """vLLM's batch-invariant kernels are CUDA only: off by default on CPU, and a user's VLLM_BATCH_INVARIANT is kept
    and recorded as asked (vLLM's CPU build then fails the cell with its reason), never quietly dropped."""
    import torch

    from harness.decode.vllm_engine import _batch_invariance

    assert not torch.cuda.is_available()
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    on, note = _batch_invariance()
    assert not on and "CPU" in note and "VLLM_BATCH_INVARIANT" not in __import__("os").environ
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    on, note = _batch_invariance()
    assert on and note.startswith("requested by the user")
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    assert _batch_invariance() == (False, "off (VLLM_BATCH_INVARIANT=0 set by the user)")
