"""Quantized variants (real bitsandbytes on CPU), baseline drift and the collapse flag."""

import json
import math

import pandas as pd
import pytest
import torch

from harness.ladder.load import load_ladder
from harness.models.loading import load_model
from harness.run.pipeline import RunConfig, run
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from tests.conftest import write

LADDER = """ladder: variants
edit_kinds: [trailing_space, parenthesized_word, newline_in_sentence, final_question, comma_inserted]
prompts:
  - {id: rev, topic: demo-reverse, text: "Reverse the word apple.", answer: elppa, check: contains,
     curated: {paraphrase: ["Spell apple backwards."]}}
  - {id: add, topic: demo-arithmetic, text: "What is 7 plus 5?", answer: 12, check: number,
     curated: {synonym: ["What is 7 added to 5?"]}}
  - {id: up, topic: demo-uppercase, text: "Write the word house in uppercase.", answer: HOUSE, check: contains}
  - {id: cap, topic: demo-geography, text: "What is the capital of France?", answer: Paris, check: contains}
  - {id: low, topic: demo-lowercase, text: "Write the word GREEN in lowercase.", answer: green, check: contains}
  - {id: first, topic: demo-first-letter, text: "What is the first letter of the word garden?", answer: g}
  - {id: rep, topic: demo-repeat, text: "Repeat the word cat three times.", answer: cat cat cat}
  - {id: sub, topic: demo-arithmetic-2, text: "What is 9 minus 4?", answer: 5, check: number}
"""


def collapsing_loader(entry, variant):
    """'int4' here is tiny-chat with its final norm zeroed: h = 0 for every prompt, so the
    logits are all equal and greedy decoding prints the same tokens whatever the prompt —
    a model that stopped responding. Built from the real weights; only the hub is absent."""
    loaded = load_model(entry, "bf16")
    if variant == "int4":
        with torch.no_grad():
            loaded.model.model.norm.weight.zero_()
        loaded.info = type(loaded.info)(**{**loaded.info.__dict__, "variant": "int4", "quantization": "degraded-for-test"})
    return loaded


@pytest.fixture(scope="module")
def entry():
    return load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]


def _run(tmp, entry, variants, loader=load_model):
    ladder = load_ladder(write(tmp / "l.yaml", LADDER))
    return run(RunConfig(models=(entry,), ladder=ladder, out=tmp / "runs", lengths=(8, 32), variants=variants,
                         progress=False, loader=loader))


def test_collapsed_variant_is_flagged(tmp_path, entry):
    result = _run(tmp_path, entry, ("bf16", "int4"), collapsing_loader)
    drift = {(r["variant"], r["length"]): r for r in result.summary["drift"]}
    assert drift[("bf16", 32)]["drift"] == 0.0  # independent decodes of bf16 agree exactly
    collapsed = drift[("int4", 32)]
    assert collapsed["perturbation_distance"] < collapsed["reference_perturbation_distance"]
    assert collapsed["drift"] > collapsed["perturbation_distance"]
    # Eight base prompts: at four, the prompt-level intervals (issue 15) could not exclude 0 and
    # the honest verdict was "not determined".
    assert collapsed["collapse"] == "collapse"
    flags = [f for f in result.summary["flags"] if f["flag"] == "collapse"]
    assert [(f["model"], f["variant"]) for f in flags] == [("tiny-chat", "int4")]
    gens = pd.read_parquet(result.run_dir / "generations.parquet")
    assert gens[gens.variant == "int4"].gen_text.nunique() == 1  # really the same text for every prompt
    # Teacher-forced: h = 0 gives equal logits, a uniform distribution, so KL(ref || uniform) = log V - H(ref) <= log V.
    tf = {(r["variant"], r["length"]): r for r in result.summary["tf_drift"]}
    assert set(tf) == {("int4", 8), ("int4", 32)}
    assert 0 < tf[("int4", 32)]["kl_mean"]["mean"] and tf[("int4", 32)]["kl_max"] <= math.log(512) + 1e-9
    # Dutta flips: the collapsed variant answers nothing right, so every prompt the reference got right flipped.
    (flips,) = [r for r in result.summary["answer_flips"] if r["length"] == 32]
    assert flips["accuracy"] == 0 and flips["accuracy_reference"] > 0
    assert flips["flips"]["mean"] == flips["accuracy_reference"] and flips["wrong_to_right"] == 0


def test_real_quantized_variants(tmp_path, entry):
    result = _run(tmp_path, entry, ("bf16", "int8", "int4"))
    assert result.exit_code == 0
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    quant = {m["variant"]: m["quantization"] for m in manifest["models"]}
    assert quant["bf16"] is None and "int8" in quant["int8"] and "nf4" in quant["int4"]
    assert manifest["libraries"]["bitsandbytes"]
    drift = {(r["variant"], r["length"]): r for r in result.summary["drift"]}
    assert drift[("bf16", 32)]["drift"] == 0.0
    assert drift[("int8", 32)]["drift_prompts"] > 0 and drift[("int4", 32)]["drift"] is not None
    assert not [f for f in result.summary["flags"] if f["flag"] == "collapse" and f["variant"] == "int8"]
    drift_rows = pd.read_parquet(result.run_dir / "drift.parquet")
    assert set(drift_rows.variant) == {"bf16", "int8", "int4"}
    assert (drift_rows[drift_rows.variant == "bf16"].emb_dist == 0).all()
    # Teacher-forced drift: every quantized row read on bf16's tokens; the reference's own rows have none (NaN).
    # "ok", possibly followed by what was noted on the way (bitsandbytes' repeated cast warning, counted once).
    tf = manifest["teacher_forced_drift"]
    assert set(tf) == {"tiny-chat--int8", "tiny-chat--int4"} and all(v.split(";")[0] == "ok" for v in tf.values())
    # both variants read beside one bf16 forward (issue 30: the reference's cost shared)
    assert "read beside bf16 with int4" in tf["tiny-chat--int8"] and "with int8" in tf["tiny-chat--int4"]
    # its cost is on record, apart from the rest of the merge (the README reads it against the cells' decode)
    phases = manifest["phase_seconds"]
    assert 0 < phases["teacher_forced_drift"] <= phases["merge"] and phases["teacher_forced_drift_cpu"] > 0
    # the cell phase: a third-party warning that repeats is shown once and counted in the cell's record
    cells = {m["variant"]: m for m in manifest["models"]}
    noted = cells["int8"].get("third_party_warnings") or {}
    assert any("bitsandbytes" in k and n > 1 for k, n in noted.items()), noted
    on_disk = json.loads((result.run_dir / "cells" / "tiny-chat--int8" / "cell.json").read_text())
    assert on_disk["third_party_warnings"] == noted
    assert drift_rows[drift_rows.variant == "bf16"].tf_positions.isna().all()
    q = drift_rows[drift_rows.variant != "bf16"]
    assert (q.tf_positions > 0).all() and (q.tf_kl_mean >= 0).all() and (q.tf_kl_max >= q.tf_kl_p99).all()
    assert q.tf_same_top1.between(0, 1).all()
    tf = {(r["variant"], r["length"]): r for r in result.summary["tf_drift"]}
    assert tf[("int4", 32)]["kl_mean"]["mean"] > tf[("int8", 32)]["kl_mean"]["mean"] > 0  # fewer bits, more drift
