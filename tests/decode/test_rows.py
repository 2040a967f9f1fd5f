"""Rows batching (harness.decode.rows): mixed-length batches whose every output is bitwise the bucket decoder's.

Real models only: the committed demo model (it ends most outputs early, so
rows leave their batches mid-decode) and random-init Qwen3, Llama 3 and
Gemma 3 on their published tokenizers (Gemma's sliding window is 16 tokens
there, so the decode runs past it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.audit.render import render_prompt
from harness.decode.greedy import DecodeRequest, decode_all, plan_batches, prompt_key
from harness.decode.engine_hf import hf_engine_run
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, entry_for_local_dir, load_registry

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PROMPTS = ["Reverse the word apple.", "What is 7 plus 5?", "Spell apple backwards.", "Hi",
           "Explain how small changes can affect a complex system over time.", "Name a colour.",
           "List three prime numbers and say which one is the largest of them, with a reason."]


def _requests(loaded, prompts=PROMPTS, replicate=0):
    out = []
    for p in prompts:
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        out.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, replicate, r.text))
    return out


def _same(a, b) -> list[str]:
    """Names of the fields where two generations of one request differ (bitwise)."""
    diff = []
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "prompt_end":
            same = np.array_equal(x.top_ids, y.top_ids) and np.array_equal(x.top_logprobs, y.top_logprobs) \
                and (x.tail_mass, x.entropy, x.veff) == (y.tail_mass, y.entropy, y.veff)
        elif f.name == "hidden_means":
            same = x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            same = x is not None and y is not None and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        elif isinstance(x, float):
            same = x == y or (np.isnan(x) and np.isnan(y))
        else:
            same = x == y
        if not same:
            diff.append(f.name)
    return diff


def _check_equal(loaded, reqs, max_new, lengths, batch_size):
    ref = decode_all(loaded, reqs, max_new, lengths, batch_size=batch_size, batching="bucket", traces="deferred")
    got = decode_all(loaded, reqs, max_new, lengths, batch_size=batch_size, batching="rows", traces="deferred")
    assert loaded.batching_used == "rows" and loaded.rows_unsupported is None
    by = {(g.prompt_key, g.replicate): g for g in ref}
    assert len(got) == len(ref) == len(reqs)
    for g in got:
        assert _same(by[(g.prompt_key, g.replicate)], g) == [], g.prompt_key
    return got


@pytest.fixture(scope="module")
def tiny_chat():
    return load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])


@pytest.mark.parametrize("batch_size", [2, 5, 32])
def test_rows_is_bitwise_the_bucket_decoder_on_the_demo_model(tiny_chat, batch_size):
    """Every captured array equal, with rows of 7 lengths in one batch, rows ending at different steps
    (batch 2: one row goes on alone beside its ended companion) and identical-rung copies."""
    reqs = _requests(tiny_chat) + _requests(tiny_chat, PROMPTS[:3], replicate=1)
    lengths = {len(r.token_ids) for r in reqs}
    assert len(lengths) >= 6
    gens = _check_equal(tiny_chat, reqs, 40, [8, 40], batch_size)
    steps = {len(g.trace_top1_id) for g in gens}
    assert len(steps) > 1 and any(g.stop_reason == "eos" for g in gens)  # rows really left mid-decode


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["qwen3", "llama3_1", "gemma3"])
def test_rows_is_bitwise_the_bucket_decoder_on_published_architectures(real_model_dir, family, attn):
    entry = entry_for_local_dir(real_model_dir(family)).model_copy(update={"attn_implementation": attn})
    loaded = load_model(entry, "bf16")
    assert loaded.model.config._attn_implementation == attn
    reqs = _requests(loaded, PROMPTS[:5])
    assert len({len(r.token_ids) for r in reqs}) >= 3
    if family == "gemma3":  # past the 16-token sliding window in prefill and while decoding
        assert loaded.model.config.sliding_window == 16 and max(len(r.token_ids) for r in reqs) > 16
    _check_equal(loaded, reqs, 20, [20], 8)


def test_rows_plan_fills_batches_and_keeps_each_copy_away_from_its_original():
    reqs = [DecodeRequest(f"k{i:02d}", (1,) * (3 + i % 5), 0) for i in range(11)]
    copies = [DecodeRequest(f"k{i:02d}", (1,) * (3 + i % 5), 1) for i in (0, 4, 9)]
    batches = plan_batches(reqs + copies, 4, "rows")
    flat = [r for b in batches for r in b]
    assert sorted(flat, key=lambda r: (r.prompt_key, r.replicate)) == sorted(reqs + copies,
                                                                             key=lambda r: (r.prompt_key, r.replicate))
    assert all(len(b) <= 4 for b in batches)
    assert all(len({r.prompt_key for r in b}) == len(b) for b in batches)  # never a prompt with its copy
    assert len(batches) == 4  # 14 requests: 4 batches, the 11 originals spread 3, 3, 3, 2 and the copies in the gaps
    assert sorted(len([r for r in b if r.replicate == 0]) for b in batches) == [2, 3, 3, 3]
    # a cell of 46 prompts and 2 copies in batches of 48: two batches of 24, not 46 + 2
    many = [DecodeRequest(f"m{i:02d}", (1,) * (5 + i % 7), 0) for i in range(46)]
    sizes = [len(b) for b in plan_batches(many + [dataclasses.replace(many[0], replicate=1),
                                                  dataclasses.replace(many[45], replicate=1)], 48, "rows")]
    assert sizes == [24, 24]


def test_a_layer_that_drops_keyword_arguments_falls_back_to_bucket_and_says_so(tiny_chat):
    """Custom modelling code whose attention does not pass keyword arguments on (emulated by wrapping one real layer:
    no architecture shipped with transformers here does that) cannot run rows batching: the decode uses bucket
    batching, gives bucket's outputs, and the engine record says why."""
    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])
    attn = loaded.model.model.layers[-1].self_attn
    original = attn.forward

    def drops_kwargs(*args, **kwargs):
        kwargs.pop("stabprobe_rows", None)
        return original(*args, **kwargs)

    attn.forward = drops_kwargs
    reqs = _requests(loaded, PROMPTS[:4])
    got = decode_all(loaded, reqs, 12, [12], batch_size=4, batching="rows", traces="deferred")
    assert loaded.batching_used == "bucket"
    assert "does not pass keyword arguments" in loaded.rows_unsupported
    ref = decode_all(tiny_chat, reqs, 12, [12], batch_size=4, batching="bucket", traces="deferred")
    by = {g.prompt_key: g for g in ref}
    assert all(_same(by[g.prompt_key], g) == [] for g in got)
    decode_all(loaded, reqs[:2], 4, [4], batch_size=4, batching="rows")  # remembered: no second attempt
    assert loaded.batching_used == "bucket"
    run = hf_engine_run(loaded, 1.0, 10, "rows")
    assert run.args["batching"] == "bucket" and "does not pass keyword arguments" in run.batch_invariant_note
    assert loaded.model.config._attn_implementation == "eager"  # the model's own attention is back
