"""`stabprobe run` end to end on the committed demo models (real tokenizer, model, MiniLM)."""

import json
import shutil

import pandas as pd
import pytest

from harness.cli import main
from harness.ladder.load import load_ladder
from harness.run.pipeline import RunConfig, run
from harness.run.resume import rebuild_report
from harness.schema import SCHEMA_VERSION
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from tests.conftest import write

SMALL_LADDER = """ladder: small
edit_kinds: [trailing_space, leading_newline, parenthesized_word, newline_in_sentence, final_question]
prompts:
  - id: rev
    topic: demo-reverse
    in_domain: true
    text: "Reverse the word apple."
    curated:
      paraphrase: ["Spell apple backwards."]
      semantic_small: ["Reverse the word table."]
  - id: add
    topic: demo-arithmetic
    in_domain: true
    text: "What is 7 plus 5?"
    curated:
      synonym: ["What is 7 added to 5?"]
  - id: weather
    topic: science
    text: "Explain why weather forecasts become unreliable after enough time."
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    ladder = load_ladder(write(tmp / "small.yaml", SMALL_LADDER))
    models = resolve_models("tiny-chat,tiny-think", load_registry(DEFAULT_REGISTRY))
    result = run(RunConfig(models=tuple(models), ladder=ladder, out=tmp / "runs", lengths=(8, 48), progress=False))
    return result


def test_run_directory_contract(small_run):
    d = small_run.run_dir
    assert small_run.exit_code == 0
    for name in ("manifest.json", "audit.parquet", "generations.parquet", "pairs.parquet", "summary.json", "report.md"):
        assert (d / name).is_file(), name
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["schema_version"] == SCHEMA_VERSION
    for m in manifest["models"]:
        assert m["status"] == "ok"
        assert m["resolved_revision"].startswith("sha256:") and m["weights_sha256"].startswith("sha256:")
        assert m["chat_template_sha256"] and m["attn_implementation"] == "eager" and m["dtype"] == "bf16"
        assert {"load", "audit", "decode", "score", "load_weights"} <= set(m["timings_s"])
    assert manifest["libraries"]["torch"] and manifest["config"]["embedder"]["sha256"].startswith("sha256:")
    emb = manifest["config"]["embedder"]
    assert (emb["long_text"], emb["window"], emb["overlap"]) == ("windows", 246, 61)  # how long outputs were embedded
    assert manifest["determinism"]["verdict"] == "deterministic"


def test_identical_rung_is_exactly_zero_on_every_metric(small_run):
    pairs = pd.read_parquet(small_run.run_dir / "pairs.parquet")
    ident = pairs[pairs.rung == "identical"]
    cells = 3  # tiny-chat/bf16, tiny-think/bf16, tiny-think/bf16-nothink (the thinking-off control)
    assert len(ident) == 3 * cells * 2  # prompts x cells x lengths
    from harness.score.pairs import answer_columns, divergence_columns
    from harness.score.registry import optional_columns

    assert {"emb_dist_answer", "tok_edit_norm_answer", "lev_traj_max", "steps_above_shift"} <= set(divergence_columns())
    for col in divergence_columns():
        if col in answer_columns():  # missing (never 0) where a scaffold did not close within the output
            assert (ident.loc[~ident.answer_missing, col] == 0).all() and ident.loc[ident.answer_missing, col].isna().all()
        elif col in optional_columns():  # the twin divergence: not computed without --twin, missing (never 0)
            assert ident[col].isna().all(), col  # its exact zeros with --twin: tests/run/test_twin_run.py
        else:
            assert (ident[col] == 0).all(), col
    assert not ident.top1_flip.any()
    # ...and the perturbed rungs are not all zero: the metrics can move
    assert pairs[pairs.rung == "positive_control"].emb_dist.min() > 0


def test_one_generation_per_distinct_prompt_and_replicate(small_run):
    gens = pd.read_parquet(small_run.run_dir / "generations.parquet")
    assert not gens.duplicated(["model", "variant", "prompt_key", "replicate"]).any()
    assert (gens.replicate == 1).sum() == 3 * 3  # one second decode per identical pair per cell
    audit = pd.read_parquet(small_run.run_dir / "audit.parquet")
    assert set(audit.model) == {"tiny-chat", "tiny-think"}


def test_report_rebuilds_from_parquet_alone(small_run, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(small_run.run_dir, d)
    (d / "summary.json").unlink()
    (d / "report.md").unlink()
    rebuilt = rebuild_report(d)
    # Compared as written: an undefined CI (a rung with one base prompt) is NaN, and NaN != NaN as floats.
    assert (d / "summary.json").read_text() == (small_run.run_dir / "summary.json").read_text()
    assert rebuilt["cells"] and len(rebuilt["cells"]) == len(json.loads((d / "summary.json").read_text())["cells"])
    assert (d / "report.md").read_text() == (small_run.run_dir / "report.md").read_text()


def test_failed_model_is_recorded_and_the_run_goes_on(tmp_path, tiny_chat_dir, capsys):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_chat_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    ladder = write(tmp_path / "small.yaml", SMALL_LADDER)
    rc = main(["run", "--models", f"tiny-chat,{broken}", "--ladder", str(ladder), "--lengths", "8",
               "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 3
    out = capsys.readouterr().out
    assert "FAILED broken-model" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    status = {m["name"]: m for m in manifest["models"]}
    assert status["tiny-chat"]["status"] == "ok"
    assert status["broken-model"]["status"] == "failed" and status["broken-model"]["error"]
    assert manifest["status"] == "complete"


def test_published_pair_file_runs(tmp_path, fixtures, capsys):
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(fixtures / "pairs" / "prompt_pairs.json"),
               "--lengths", "16", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "determinism: deterministic" in out and "positive_control" in out


def test_scaffold_shares_and_the_thinking_off_control(small_run):
    summary = json.loads((small_run.run_dir / "summary.json").read_text())
    share = {(s["model"], s["variant"]): s["scaffold_share"] for s in summary["scaffold"]}
    assert share[("tiny-think", "bf16")] >= 0.95
    assert share[("tiny-chat", "bf16")] <= 0.05
    assert share[("tiny-think", "bf16-nothink")] <= 0.05
    gens = pd.read_parquet(small_run.run_dir / "generations.parquet")
    think = gens[(gens.model == "tiny-think") & (gens.variant == "bf16")]
    # off-domain prompts make the demo think model emit an empty scaffold as a bare "</think>"
    assert think.gen_text.str.lstrip().str.startswith(("<think>", "</think>")).mean() >= 0.95
    nothink = gens[(gens.model == "tiny-think") & (gens.variant == "bf16-nothink")]
    assert not nothink.gen_text.str.contains("<think>").any()
    # raw and answer-span distances side by side, in the table and in the report
    pairs = pd.read_parquet(small_run.run_dir / "pairs.parquet")
    assert {"emb_dist", "emb_dist_answer", "tok_edit_norm_answer"} <= set(pairs.columns)
    scaffolded = pairs[(pairs.model == "tiny-think") & (pairs.variant == "bf16") & (pairs.rung != "identical")]
    assert (scaffolded.scaffold_a == "closed").mean() >= 0.95
    assert "answer-span emb. distance" in (small_run.run_dir / "report.md").read_text()
    assert any(f["flag"] == "scaffold" and f["model"] == "tiny-think" and f["variant"] == "bf16" for f in summary["flags"])


def test_demo_models_are_neither_unresponsive_nor_looping(small_run):
    summary = json.loads((small_run.run_dir / "summary.json").read_text())
    assert not [f for f in summary["flags"] if f["flag"] in ("unresponsive", "repetition_loop")]
    longest = [r for r in summary["unresponsive"] if r["length"] == 48]
    assert len(longest) == 3 and not any(r["unresponsive"] for r in longest)
