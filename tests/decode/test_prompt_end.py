"""The compact prompt-end record against the full row, the pair divergences in one pass, traces at chosen steps."""

import math

import numpy as np
import pytest
from scipy.special import log_softmax

from harness.decode.prompt_end import compact
from harness.score.metrics import divergence as dv


def _row(seed, v=5000, scale=4.0):
    return log_softmax(np.random.default_rng(seed).normal(size=v) * scale).astype(np.float32)


def test_compact_keeps_the_top_k_the_tail_and_the_statistics_of_the_full_row():
    lp = _row(0)
    c = compact(lp, k=64)
    lp64 = lp.astype(np.float64)
    order = np.lexsort((np.arange(lp.size), -lp64))  # brute force: sort everything by (-logprob, id)
    assert np.array_equal(c.top_ids, order[:64]) and np.array_equal(c.top_logprobs, lp[order[:64]])
    p = np.exp(lp64)
    # float64 probabilities and sums: the statistics agree with the plain float64 formulas to rounding.
    assert c.tail_mass == pytest.approx(p[order[64:]].sum(), rel=1e-12)
    assert c.tail_mass + np.exp(c.top_logprobs.astype(np.float64)).sum() == pytest.approx(p.sum(), rel=1e-12)
    assert c.entropy == pytest.approx(dv.entropy(lp), rel=1e-12) and c.veff == pytest.approx(dv.effective_vocab(lp), rel=1e-12)
    assert c.top1_id == int(np.argmax(lp)) and c.top1_prob == dv.top1_prob(lp)
    assert c.margin == dv.logprob_margin(lp) and not c.non_finite and c.vocab_size == lp.size


def test_compact_ties_resolve_to_the_lower_id_as_argmax_does():
    lp = np.full(1000, -9.0, np.float32)
    lp[[700, 5, 300]] = -1.0  # a three-way tie at the top, k cuts through it
    lp[3] = -2.0
    c = compact(lp, k=2)
    assert c.top_ids.tolist() == [5, 300] and c.top1_id == int(np.argmax(lp))
    assert compact(lp, k=4).top_ids.tolist() == [5, 300, 700, 3]


def test_compact_top_k_is_the_brute_force_order_on_ties_and_sorted_rows():
    # The top k is found from a strided sample's bound first: rows where the sample misses the top (sorted rows),
    # or where most entries tie, must still give exactly the brute-force (-logprob, id) order.
    rng = np.random.default_rng(5)
    rows = [rng.integers(0, 3, 4000).astype(np.float32) - 9, np.sort(_row(6, v=4000)), np.sort(_row(7, v=4000))[::-1].copy(),
            _row(8, v=151_936), np.repeat(_row(9, v=250), 16)]
    for lp in rows:
        for k in (1, 64, 300):
            order = np.lexsort((np.arange(lp.size), -lp.astype(np.float64)))
            assert compact(lp, k=k).top_ids.tolist() == order[:k].tolist()


def test_compact_flags_non_finite_rows_and_keeps_masked_tokens():
    lp = _row(1, v=200)
    lp[7] = -np.inf  # a masked token is legitimate
    c = compact(lp)
    assert not c.non_finite and c.entropy == pytest.approx(dv.entropy(lp), rel=1e-12)  # 0 * -inf counts as 0
    bad = lp.copy()
    bad[9] = np.nan
    assert compact(bad).non_finite
    bad[9] = np.inf
    assert compact(bad).non_finite
    assert compact(lp, k=500).tail_mass == 0.0  # k beyond V: everything kept, nothing in the tail


@pytest.mark.parametrize("shift", [0.0, 1e-3, 3.0])
def test_pair_divergences_in_one_pass_agree_with_the_roles_swapped(shift):
    # Swapping a and b runs other operations (KL(b||a) as the first KL, the normaliser difference from the other
    # side); the values against a 40-digit brute force are checked in tests/score/test_divergence_exact.py.
    a = _row(2, v=151_936)
    b = a.copy() if shift == 0.0 else _row(3, v=151_936) if shift > 1 else a + np.float32(0)
    if 0 < shift < 1:
        b[11] += np.float32(shift)  # not renormalised: the exact normaliser difference must take care of it
    js, kab, kba = dv.divergences(dv.Prepared(a), dv.Prepared(b))
    sjs, skba, skab = dv.divergences(dv.Prepared(b), dv.Prepared(a))
    assert (js, kab, kba) == pytest.approx((sjs, skab, skba), rel=1e-9, abs=0)
    if shift == 0.0:
        assert (js, kab, kba) == (0.0, 0.0, 0.0)  # bitwise-equal rows: exactly 0 (the identical rung)
    else:
        assert 0 < js <= math.log(2) and kab > 0 and kba > 0
    nan = a.copy()
    nan[0] = np.nan
    assert all(math.isnan(x) for x in dv.divergences(dv.Prepared(nan), dv.Prepared(b)))


def test_traces_at_chosen_steps_equal_the_traces_of_every_step():
    from harness.audit.render import render_prompt
    from harness.decode.greedy import DecodeRequest, decode_all, prompt_key
    from harness.decode.traces import drop_states, fill_traces, missing_steps
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])
    reqs = []
    for p in ("Reverse the word apple.", "What is 7 plus 5?"):
        r = render_prompt(loaded.tokenizer, p, loaded.policy)
        reqs.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text))
    every = decode_all(loaded, reqs, 10, (10,), batch_size=2)  # traces="all"
    deferred = decode_all(loaded, reqs, 10, (10,), batch_size=2, traces="deferred")
    assert all(g.states is not None and np.isnan(g.trace_delta_tcb).all() for g in deferred)
    want = {(deferred[0].prompt_key, 0): {0, 3, 99}, (deferred[1].prompt_key, 0): {5}}
    chosen = drop_states(fill_traces(loaded, deferred, want))
    for g, full in zip(chosen, every):
        steps = sorted(t for t in want[(g.prompt_key, 0)] if t < len(g.trace_top1_id))
        assert list(g.trace_steps) == steps and not missing_steps(g, want[(g.prompt_key, 0)]) and g.states is None
        np.testing.assert_allclose(g.trace_delta_tcb[steps], full.trace_delta_tcb[steps], rtol=1e-5)
        np.testing.assert_allclose(g.trace_flip_radius[steps], full.trace_flip_radius[steps], rtol=1e-5)
        assert np.array_equal(g.trace_head_top1_id[steps], full.trace_head_top1_id[steps])
        others = np.setdiff1d(np.arange(len(g.trace_top1_id)), steps)
        assert np.isnan(g.trace_delta_tcb[others]).all() and (g.trace_head_top1_id[others] == -1).all()
