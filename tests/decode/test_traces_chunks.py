"""The traces of a state do not depend on the other states filled with it (harness.decode.traces._fixed_chunks).

Decode workers fill the states they hold (harness.run.parallel); one worker fills the whole cell at once. The
two agree bitwise only if a state's traces are the same whatever the count of states in the call and its
position among them: filled all at once and filled in two uneven halves (neither a multiple of the chunk), on
the demo model and on a random-init Qwen3 with its real 151,669-token vocabulary.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.decode.traces import fill_traces


def _decode(loaded, prompts, steps):
    from harness.audit.render import render_prompt
    from harness.decode.greedy import DecodeRequest, decode_all, prompt_key

    reqs = []
    for p in prompts:
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        reqs.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text))
    return decode_all(loaded, reqs, steps, (steps,), batch_size=len(reqs), traces="deferred")


PROMPTS = ["Reverse the word apple.", "What is 7 plus 5?", "Spell apple backwards.", "Name a colour.",
           "Count to five.", "Write a haiku about rain.", "List three fruits.", "Translate 'cat' to French.",
           "What is the capital of France?", "Sort 3, 1, 2."]
FIELDS = ("trace_delta_tcb", "trace_flip_radius", "trace_flip_rival", "trace_head_top1_id")


def _assert_halves_equal(loaded, gens):
    want = {(g.prompt_key, g.replicate): set(range(len(g.trace_top1_id))) for g in gens}
    rows = sum(len(s) for s in want.values())
    assert rows > 40 and rows % 32, rows  # more than one chunk, the last one padded
    whole = fill_traces(loaded, gens, want)
    # Uneven halves: the first output alone (a few rows), then the rest; and the steps of every output split by parity.
    first = fill_traces(loaded, gens[:1], want) + fill_traces(loaded, gens[1:], want)
    even = {k: {t for t in s if t % 2 == 0} for k, s in want.items()}
    odd = {k: {t for t in s if t % 2} for k, s in want.items()}
    parity = fill_traces(loaded, fill_traces(loaded, gens, odd), even)
    assert np.isfinite(np.concatenate([g.trace_delta_tcb for g in whole])).all()
    for a, b, c in zip(whole, first, parity):
        assert a.trace_steps == b.trace_steps == c.trace_steps
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
            np.testing.assert_array_equal(getattr(a, f), getattr(c, f), err_msg=f)


def test_fill_is_the_same_in_parts_on_the_demo_model(one_thread):
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])
    gens = _decode(loaded, PROMPTS, 16)
    _assert_halves_equal(loaded, gens)


def test_fill_is_the_same_in_parts_at_a_real_vocabulary(one_thread, real_model_dir):
    from harness.models.loading import load_model
    from harness.models.registry import entry_for_local_dir

    loaded = load_model(entry_for_local_dir(real_model_dir("qwen3")))
    gens = _decode(loaded, PROMPTS[:4], 15)
    if not loaded.head_check["ok"]:
        pytest.fail(f"head check failed on the random-init model: {loaded.head_check}")
    _assert_halves_equal(loaded, gens)
