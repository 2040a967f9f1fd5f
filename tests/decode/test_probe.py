"""Teacher-forced probe on the committed demo models: same numbers as the in-generation capture."""

import numpy as np
import pytest

from harness.decode.greedy import DecodeRequest, decode_all, prompt_key
from harness.models.loading import load_model
from harness.decode.probe import probe_outputs, teacher_forced
from harness.decode.records import ProbeInput
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.audit.render import render_prompt

PROMPTS = ["Reverse the word apple.", "What is 7 plus 5?", "Spell apple backwards.", "Uppercase the word river.",
           "Explain how small changes can affect a complex system over time.", "what is the capital of France"]
LENGTHS = (8, 40)


def _decoded(name: str, variant: str = "bf16"):
    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()[name], variant)
    reqs = []
    for p in PROMPTS:
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        reqs.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text))
    gens = decode_all(loaded, reqs, max(LENGTHS), LENGTHS)
    ids = {r.prompt_key: r.token_ids for r in reqs}
    items = [ProbeInput(ids[g.prompt_key], tuple(int(t) for t in g.trace_top1_id)) for g in gens]
    return loaded, gens, items


@pytest.fixture(scope="module")
def chat():
    return _decoded("tiny-chat")


@pytest.fixture(scope="module")
def think():
    return _decoded("tiny-think")


@pytest.mark.parametrize("which", ["chat", "think"])
def test_probe_reproduces_the_in_generation_capture(which, request):
    """bf16: same argmax at every step, same chosen logits and prompt-end distribution bit for bit;
    the other logits and the states differ by bf16 rounding only (a prefill over more rows
    than one KV-cached step): at most one bf16 ulp of the logit (2^-7 relative), states 1e-2."""
    loaded, gens, items = request.getfixturevalue(which)
    results = probe_outputs(loaded, items, LENGTHS)
    for g, r in zip(gens, results):
        a = r.agreement
        assert (a.steps, a.agreeing, a.first_disagreement, a.share) == (len(g.trace_top1_id), len(g.trace_top1_id), -1, 1.0)
        assert np.isnan(a.margin_at_disagreement)
        assert np.array_equal(r.top1_id, g.trace_top1_id)
        assert np.array_equal(r.top1_logit, g.trace_top1_logit)
        assert np.array_equal(r.engine_logit, r.top1_logit)
        assert np.array_equal(r.prompt_end_logprobs, g.prompt_end_logprobs)
        ulp = 2.0 ** -7 * np.maximum(np.abs(g.trace_top2_logit), 1.0)
        assert np.all(np.abs(r.top2_logit - g.trace_top2_logit) <= ulp)
        for L in LENGTHS:
            np.testing.assert_allclose(r.hidden_means[L], g.hidden_means[L], atol=1e-2)
        np.testing.assert_allclose(r.flip_radius, g.trace_flip_radius, atol=5e-2)
        assert np.array_equal(r.head_top1_id, g.trace_head_top1_id)  # the closed-form head's own top-1, as generate stores it
        assert r.states.shape == (a.steps, loaded.model.config.hidden_size)


def test_fp32_probe_matches_capture_to_float_rounding():
    loaded, gens, items = _decoded("tiny-base", "fp32")
    for g, r in zip(gens, probe_outputs(loaded, items, LENGTHS)):
        assert np.array_equal(r.top1_id, g.trace_top1_id) and np.array_equal(r.top2_id, g.trace_top2_id)
        np.testing.assert_allclose(r.top1_logit, g.trace_top1_logit, atol=1e-4)
        np.testing.assert_allclose(r.margin, g.trace_margin, atol=1e-4)
        np.testing.assert_allclose(r.prompt_end_logprobs, g.prompt_end_logprobs, atol=1e-4)
        np.testing.assert_allclose(r.hidden_means[8], g.hidden_means[8], atol=1e-5)


def test_identical_requests_probe_bit_identically(chat):
    loaded, _, items = chat
    a, b = probe_outputs(loaded, [items[0], items[0]], LENGTHS)
    assert np.array_equal(a.states, b.states) and np.array_equal(a.top2_logit, b.top2_logit)


def test_a_foreign_token_is_reported_not_patched(chat):
    """Replace the engine's token at step k by the probe's runner-up: the probe finds the first
    disagreement at k, its margin there is exactly the top-1/top-2 gap, and the later steps are
    read on the foreign tokens (teacher forcing), never re-decoded."""
    loaded, gens, items = chat
    item = max(items, key=lambda it: len(it.tokens))
    base = teacher_forced(loaded.model, item, LENGTHS)
    k = 2
    foreign = item.tokens[:k] + (int(base.top2_id[k]),) + item.tokens[k + 1:]
    r = teacher_forced(loaded.model, ProbeInput(item.prompt_ids, foreign), LENGTHS)
    a = r.agreement
    assert a.first_disagreement == k
    assert (a.engine_token, a.probe_token) == (int(base.top2_id[k]), int(base.top1_id[k]))
    assert a.margin_at_disagreement == pytest.approx(float(base.top1_logit[k] - base.top2_logit[k]), abs=0)
    assert a.agreeing < a.steps and a.share == a.agreeing / a.steps
    assert np.array_equal(r.top1_logit[: k + 1], base.top1_logit[: k + 1])  # causal: steps up to k unchanged
    assert r.engine_logit[k] == base.top2_logit[k]


def test_empty_output_is_refused(chat):
    loaded, _, items = chat
    with pytest.raises(ValueError, match="no token"):
        teacher_forced(loaded.model, ProbeInput(items[0].prompt_ids, ()), LENGTHS)
