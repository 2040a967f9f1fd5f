"""Teacher-forced twin divergence: closed forms against brute force, the identical rung bitwise, batches against
one-at-a-time, on the demo model (tiny-chat) and on small hand-made logits."""

import math

import numpy as np
import pytest
import torch

from harness.audit.render import render_prompt
from harness.decode.greedy import DecodeRequest, decode_all, prompt_key
from harness.decode.probe import step_logits
from harness.ladder.records import PromptPair
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.run.twin import cell_twin, compute, plan
from harness.score.records import TwinPass
from harness.score.twin import plan_batches, run_passes, summarize, twin_steps


def _brute(own: torch.Tensor, other: torch.Tensor, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KL, same top-1 and LLR per step by the textbook formulas, row by row in float64 probabilities."""
    kl, same, llr = [], [], []
    for t, y in enumerate(tokens):
        p = torch.softmax(own[t].double(), -1)
        q = torch.softmax(other[t].double(), -1)
        kl.append(float(sum(p[i] * math.log(p[i] / q[i]) for i in range(p.numel()) if p[i] > 0)))
        same.append(int(own[t].argmax()) == int(other[t].argmax()))
        llr.append(math.log(q[y]) - math.log(p[y]))
    return np.array(kl), np.array(same), np.array(llr)


def test_closed_forms_against_brute_force_on_a_small_vocabulary():
    g = torch.Generator().manual_seed(7)
    own = torch.randn(9, 7, generator=g) * 3
    other = own + torch.randn(9, 7, generator=g) * 0.4
    other[5] = own[5]  # one step where the prompts agree exactly
    own[2, 3] = other[2, 3] = float("-inf")  # a masked token: no mass on either side, no contribution (not nan)
    tokens = [int(i) for i in own.argmax(-1)]  # own's greedy output, as the twin reads it
    d = twin_steps(own, other, tokens, chunk=4)  # chunks of 4: the reduction's seams are crossed
    kl, same, llr = _brute(own, other, tokens)
    np.testing.assert_allclose(d.kl, kl, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(d.same_top1, same)
    np.testing.assert_allclose(d.llr, llr, rtol=1e-10, atol=1e-13)
    assert d.kl[5] == 0.0 and d.llr[5] == 0.0
    for L in (1, 4, 9, 50):
        n = min(L, 9)
        s = summarize(d, L)
        assert s["kl"] == pytest.approx(kl[:n].mean(), rel=1e-10)
        assert s["kl_max"] == pytest.approx(kl[:n].max(), rel=1e-10)
        assert s["llr"] == pytest.approx(llr[:n].sum(), rel=1e-10)
        assert s["llr_tok"] == pytest.approx(llr[:n].mean(), rel=1e-10)
        differ = np.flatnonzero(~same[:n])
        assert s["top1_changed"] == float(differ.size > 0)
        if differ.size:
            assert s["first_top1"] == differ[0] + 1
        else:
            assert math.isnan(s["first_top1"])  # never changed: missing, not step 0


def test_no_change_of_argmax_is_nan_first_step_and_zero_rate():
    own = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    other = own + torch.tensor([[0.0, 1.0, 0.5], [0.3, 0.0, 2.0]])  # shifted, argmax kept
    s = summarize(twin_steps(own, other, [0, 1]), 2)
    assert s["kl"] > 0 and s["top1_changed"] == 0.0 and math.isnan(s["first_top1"])
    assert all(math.isnan(v) for v in summarize(twin_steps(own, other, [0, 1]), 0).values())


def test_plan_batches_keeps_equal_inputs_together_and_respects_the_budget():
    a = TwinPass((1, 2, 3), (4, 5))
    same = TwinPass((1, 2, 3), (4, 5))
    c = TwinPass((9, 8, 7), (4, 5))
    d = TwinPass((1, 2), (4, 5))
    # budget of one row per forward: the two equal inputs still share a forward
    batches = plan_batches([a, c, same, d], vocab=10, budget=20)
    assert sorted(map(sorted, batches)) == [[0, 2], [1], [3]]
    assert sorted(map(sorted, plan_batches([a, c, same, d], vocab=10, budget=1000))) == [[0, 1, 2], [3]]


PROMPTS = {
    "base": "Reverse the word apple.",
    "edit": "Reverse the word apple. ",
    "para": "Spell apple backwards.",
    "other": "What is 7 plus 5?",
}
PAIRS = [
    PromptPair("p/identical/copy", "p", "identical", "copy", PROMPTS["base"], PROMPTS["base"], "generated"),
    PromptPair("p/noop_format/trailing_space", "p", "noop_format", "trailing_space", PROMPTS["base"], PROMPTS["edit"], "generated"),
    PromptPair("p/paraphrase/curated", "p", "paraphrase", "curated", PROMPTS["base"], PROMPTS["para"], "curated"),
    PromptPair("p/positive_control/x", "p", "positive_control", "x", PROMPTS["base"], PROMPTS["other"], "paired"),
]


@pytest.fixture(scope="module")
def demo():
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    loaded = load_model(entry, "bf16")
    rendered = {t: render_prompt(loaded.tokenizer, t, loaded.policy) for t in PROMPTS.values()}
    reqs, sides = [], {}
    for p in PAIRS:
        ka, kb = prompt_key(rendered[p.prompt_a].token_ids), prompt_key(rendered[p.prompt_b].token_ids)
        rep = 1 if p.rung == "identical" else 0
        for k, text, r in ((ka, p.prompt_a, 0), (kb, p.prompt_b, rep)):
            if all((q.prompt_key, q.replicate) != (k, r) for q in reqs):
                reqs.append(DecodeRequest(k, rendered[text].token_ids, r, rendered[text].text))
        sides[p.pair_id] = (ka, kb, rep)
    gens = decode_all(loaded, reqs, 24, (8, 24))
    return loaded, reqs, sides, gens


def test_identical_rung_reads_the_same_input_twice_bitwise_and_is_exactly_zero(demo):
    loaded, reqs, sides, gens = demo
    by_key = {(g.prompt_key, g.replicate): g for g in gens}
    ids = {r.prompt_key: tuple(r.token_ids) for r in reqs}
    passes, reads, comps = plan(PAIRS, sides, by_key, ids)
    (_, _, own, other), = [c for c in comps if c[0] == "p/identical/copy" and c[1] == "ab"]
    assert own != other and passes[own] == passes[other]  # two passes, one input
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    for budget in (1, 1 << 25):  # alone with its copy, or in a forward with every other pass of its shape
        got = {}
        for idx, logits in run_passes(loaded.model, passes, vocab, budget):
            for b, i in enumerate(idx):
                got[i] = logits[b]
        assert torch.equal(got[own], got[other])
    reading, note = cell_twin(loaded, "hf", PAIRS, sides, gens, reqs, "test-key", None)
    assert note.startswith("ok: 4 pairs")
    for d in ("ab", "ba"):
        t = reading[("p/identical/copy", d)]
        assert (t.kl == 0).all() and t.same_top1.all() and (t.llr == 0).all()
    moved = reading[("p/positive_control/x", "ab")]
    assert moved.kl.mean() > 0.1 and not moved.same_top1.all()


def test_batched_equals_one_at_a_time_and_a_direct_forward(demo):
    loaded, reqs, sides, gens = demo
    by_key = {(g.prompt_key, g.replicate): g for g in gens}
    ids = {r.prompt_key: tuple(r.token_ids) for r in reqs}
    passes, reads, comps = plan(PAIRS, sides, by_key, ids)
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    ticks: list[int] = []
    batched = compute(loaded.model, passes, reads, comps, vocab, progress=ticks.append)
    assert sum(ticks) == len(passes) and all(k > 0 for k in ticks)  # the progress bar counts every pass once
    for pid, d, o, t in comps:
        tokens = passes[o].tokens
        one = twin_steps(step_logits(loaded.model, passes[o].prompt_ids, tokens),
                         step_logits(loaded.model, passes[t].prompt_ids, tokens), tokens)
        got = batched[(pid, d)]
        # equal to the bit: every forward holds one input shape, no padding (harness.score.twin.plan_batches)
        np.testing.assert_array_equal(got.kl, one.kl)
        np.testing.assert_array_equal(got.llr, one.llr)
        np.testing.assert_array_equal(got.same_top1, one.same_top1)
        # and the model's plain forward over every row gives the same numbers up to bf16 rounding
        with torch.inference_mode():
            def direct(prompt):
                x = torch.tensor([list(prompt) + list(tokens[:-1])])
                return loaded.model(input_ids=x).logits[0, len(prompt) - 1:].float()
            ref = twin_steps(direct(passes[o].prompt_ids), direct(passes[t].prompt_ids), tokens)
        np.testing.assert_allclose(got.kl, ref.kl, rtol=1e-3, atol=1e-6)


def test_other_engines_leave_the_columns_missing_with_a_reason(demo):
    loaded, reqs, sides, gens = demo
    for engine in ("vllm", "llamacpp"):
        reading, note = cell_twin(loaded, engine, PAIRS, sides, gens, reqs, "k", None)
        assert reading is None and note.startswith(f"not computed: engine {engine}")


def test_twin_is_memoized_under_the_decode_key(demo, tmp_path):
    loaded, reqs, sides, gens = demo
    first, n1 = cell_twin(loaded, "hf", PAIRS, sides, gens, reqs, "key", str(tmp_path))
    again, n2 = cell_twin(loaded, "hf", PAIRS, sides, gens, reqs, "key", str(tmp_path))
    assert "teacher-forced passes" in n1 and "from the cache" in n2
    assert first.keys() == again.keys()
    for k in first:
        np.testing.assert_array_equal(first[k].kl, again[k].kl)
        np.testing.assert_array_equal(first[k].llr, again[k].llr)
    _, n3 = cell_twin(loaded, "hf", PAIRS, sides, gens, reqs, "another-decode", str(tmp_path))
    assert "teacher-forced passes" in n3
