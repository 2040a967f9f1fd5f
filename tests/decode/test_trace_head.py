"""Per-step traces: the closed-form head is checked against the logits greedy used, and its top-1 is kept."""

import numpy as np
import pytest


# --- traces: the closed-form head checked against the model's own logits -----

def _decode_demo(loaded):
    from harness.decode.greedy import DecodeRequest, decode_all, prompt_key
    from harness.audit.render import render_prompt

    reqs = []
    for p in ("Reverse the word apple.", "What is 7 plus 5?", "Spell apple backwards.", "Name a colour."):
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        reqs.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text))
    return decode_all(loaded, reqs, 12, (12,), batch_size=4)


def test_trace_head_is_checked_and_its_top1_stored():
    from harness.run.cell import head_top1_disagreements
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])
    gens = _decode_demo(loaded)
    check = loaded.head_check
    assert check["ok"] and 0 <= check["max_rel_dev"] <= check["tolerance"] == pytest.approx(2.0 ** -7)
    assert all(len(g.trace_head_top1_id) == len(g.trace_top1_id) and (g.trace_head_top1_id >= 0).all() for g in gens)
    counts = head_top1_disagreements(gens)
    assert counts["steps"] == sum(len(g.trace_top1_id) for g in gens) and 0 <= counts["disagree"] <= counts["steps"]
    assert np.isfinite(np.concatenate([g.trace_delta_tcb for g in gens])).all()


def test_a_head_that_misses_the_logits_leaves_nan_traces_with_the_reason():
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])
    # A config that claims a softcap the Llama forward never applies: the closed forms would
    # describe a head the model does not have.
    loaded.model.config.final_logit_softcapping = 2.0
    gens = _decode_demo(loaded)
    assert loaded.head_check["ok"] is False and loaded.head_check["max_rel_dev"] > loaded.head_check["tolerance"]
    assert "head check failed" in loaded.stability_note
    for g in gens:
        assert np.isnan(g.trace_delta_tcb).all() and np.isnan(g.trace_flip_radius).all() and (g.trace_head_top1_id == -1).all()
