"""Greedy decoding on the committed demo model: determinism, prefix consistency, captured state."""

import numpy as np
import pytest
import torch

from harness.decode.greedy import DecodeRequest, decode_all, plan_batches, prompt_key
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.audit.render import render_prompt

PROMPTS = ["Reverse the word apple.", "What is 7 plus 5?", "Spell apple backwards.",
           "Explain how small changes can affect a complex system over time."]


@pytest.fixture(scope="module")
def tiny_chat():
    return load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])


def _requests(loaded, replicate=0):
    out = []
    for p in PROMPTS:
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        out.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, replicate, r.text))
    return out


def test_replicates_in_different_batches_are_bit_exact(tiny_chat):
    reqs = _requests(tiny_chat, 0) + _requests(tiny_chat, 1)
    batches = plan_batches(reqs, batch_size=3)
    assert all(len({r.replicate for r in b}) == 1 for b in batches)
    gens = decode_all(tiny_chat, reqs, 24, [8, 24], batch_size=3)
    by = {}
    for g in gens:
        by.setdefault(g.prompt_key, {})[g.replicate] = g
    for pair in by.values():
        a, b = pair[0], pair[1]
        assert a.gen_ids == b.gen_ids
        assert np.array_equal(a.prompt_end_logprobs, b.prompt_end_logprobs)
        assert np.array_equal(a.trace_top1_logit, b.trace_top1_logit)
        assert all(np.array_equal(a.hidden_means[L], b.hidden_means[L]) for L in (8, 24))


def test_greedy_is_prefix_consistent(tiny_chat):
    short = decode_all(tiny_chat, _requests(tiny_chat), 6, [6])
    long = decode_all(tiny_chat, _requests(tiny_chat), 30, [30])
    for s, l in zip(short, long):
        assert s.gen_ids == l.gen_ids[: len(s.gen_ids)]


def test_captured_state_reproduces_the_models_own_step(tiny_chat):
    """The trace's chosen token is the argmax of the model's logits, h from the hook is the
    model's own final (post-norm) state, and W h gives its logits up to bf16 rounding
    (the head runs in bf16: ~2^-8 relative per product, so 1% of the largest logit)."""
    req = _requests(tiny_chat)[0]
    g = decode_all(tiny_chat, [req], 4, [1])[0]
    ids = torch.tensor([list(req.token_ids)])
    with torch.inference_mode():
        out = tiny_chat.model(ids, output_hidden_states=True)
    logits = out.logits[0, -1].float()
    assert int(g.trace_top1_id[0]) == int(torch.argmax(logits))
    assert float(g.trace_top1_logit[0]) == pytest.approx(float(logits.max()), abs=1e-6)
    h = torch.from_numpy(g.hidden_means[1])
    assert torch.equal(h, out.hidden_states[-1][0, -1].float())
    W = tiny_chat.model.get_output_embeddings().weight.float()
    assert torch.allclose(W @ h, logits, atol=1e-2 * float(logits.abs().max()))
    np.testing.assert_allclose(g.prompt_end_logprobs, torch.log_softmax(logits, -1).numpy(), atol=1e-6)


def test_eos_stops_and_is_excluded(tiny_chat):
    g = decode_all(tiny_chat, _requests(tiny_chat)[:1], 64, [64])[0]
    assert g.stop_reason == "eos"
    assert not set(g.gen_ids) & set(tiny_chat.info.eos_token_ids)
    assert len(g.trace_top1_id) == len(g.gen_ids) + 1  # the EOS-choosing step is traced
    assert (g.trace_margin >= 0).all()
