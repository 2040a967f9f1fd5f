"""Teacher-forced drift against a direct computation on the demo model's own logits (tiny-chat, bf16 vs int8)."""

import math

import numpy as np
import pytest
import torch

from harness.audit.render import render_prompt
from harness.decode.greedy import DecodeRequest, decode_all, prompt_key
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.score.metrics import divergence as dv
from harness.score.tf_drift import step_divergence, summarize, teacher_forced_rows
from harness.decode.probe import step_logits

PROMPTS = ["Reverse the word apple.", "What is 7 plus 5?", "Explain how small changes can affect a complex system over time."]
LENGTHS = (4, 64)


@pytest.fixture(scope="module")
def models():
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    ref, q = load_model(entry, "bf16"), load_model(entry, "int8")
    reqs = []
    for p in PROMPTS:
        r = render_prompt(ref.tokenizer, p, ref.policy)
        reqs.append(DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text))
    gens = decode_all(ref, reqs, max(LENGTHS), LENGTHS)
    ids = {r.prompt_key: r.token_ids for r in reqs}
    items = [(g.prompt_key, ids[g.prompt_key], tuple(int(t) for t in g.trace_top1_id)) for g in gens]
    return ref, q, items


def _direct(model, prompt_ids, tokens) -> np.ndarray:
    """The model's plain forward over prompt + tokens, every row, then the rows that predict each token."""
    ids = torch.tensor([list(prompt_ids) + list(tokens[:-1])])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    return torch.log_softmax(logits[n - 1:n - 1 + len(tokens)], dim=-1).numpy()


def test_kld_matches_a_direct_computation_on_the_logits(models):
    ref, q, items = models
    # one output per forward: bitsandbytes int8 rows depend on their batch mates (test_rows_batching_... below)
    rows = {(r["prompt_key"], r["length"]): r
            for r in teacher_forced_rows(ref.model, q.model, items, LENGTHS, batching="single")}
    some_drift = False
    for key, prompt_ids, tokens in items:
        lr, lq = _direct(ref.model, prompt_ids, tokens), _direct(q.model, prompt_ids, tokens)
        kl = np.array([dv.kl(a, b) for a, b in zip(lr, lq)])
        same = lr.argmax(-1) == lq.argmax(-1)
        dp = np.exp(lq[np.arange(len(tokens)), tokens].astype(np.float64)) - np.exp(lr[np.arange(len(tokens)), tokens].astype(np.float64))
        for L in LENGTHS:
            r, n = rows[(key, L)], min(L, len(tokens))
            assert r["tf_positions"] == n
            np.testing.assert_allclose(r["tf_kl_steps"], kl[:n], rtol=1e-4, atol=1e-9)
            assert r["tf_kl_mean"] == pytest.approx(kl[:n].mean(), rel=1e-4, abs=1e-9)
            assert r["tf_kl_median"] == pytest.approx(np.median(kl[:n]), rel=1e-4, abs=1e-9)
            assert r["tf_kl_p99"] == pytest.approx(np.percentile(kl[:n], 99), rel=1e-4, abs=1e-9)
            assert r["tf_kl_max"] == pytest.approx(kl[:n].max(), rel=1e-4, abs=1e-9)
            assert r["tf_same_top1"] == pytest.approx(same[:n].mean())
            assert r["tf_dp_mean"] == pytest.approx(dp[:n].mean(), rel=1e-3, abs=1e-6)
            differ = np.flatnonzero(~same[:n])
            if differ.size:
                assert r["tf_first_top1_diff"] == differ[0] + 1
            else:
                assert math.isnan(r["tf_first_top1_diff"])  # never changed: missing, not step 0
        some_drift |= bool(kl.max() > 0)
    assert some_drift, "int8 must move the distribution somewhere, or this test compares zeros"


def test_same_model_is_exactly_zero_and_chunks_do_not_matter(models):
    ref, _, items = models
    key, prompt_ids, tokens = items[2]
    z = step_logits(ref.model, prompt_ids, tokens)
    d = step_divergence(z, z.clone(), tokens)
    assert (d.kl == 0).all() and d.same_top1.all() and (d.dp == 0).all()
    s = summarize(d, 64)
    assert s["tf_kl_max"] == 0 and s["tf_same_top1"] == 1 and math.isnan(s["tf_first_top1_diff"])
    noisy = z + torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    whole, chunked = step_divergence(z, noisy, tokens, chunk=1024), step_divergence(z, noisy, tokens, chunk=3)
    assert np.array_equal(whole.kl, chunked.kl) and np.array_equal(whole.dp, chunked.dp)
    assert (whole.kl > 0).all()


def test_step_logits_are_the_rows_of_the_full_forward(models):
    ref, _, items = models
    _, prompt_ids, tokens = items[0]
    got = torch.log_softmax(step_logits(ref.model, prompt_ids, tokens), dim=-1).numpy()
    np.testing.assert_allclose(got, _direct(ref.model, prompt_ids, tokens), atol=2e-2)  # bf16 rounding of fewer rows
    assert (got.argmax(-1) == np.asarray(tokens)).all()  # greedy's own tokens: the probe reproduces them


def test_shape_batches_are_the_one_at_a_time_rows_and_warnings_are_counted(models):
    """The fallback: items of equal shape share one forward. Each prompt is duplicated so batches of several rows
    form; every value equals the one-item batch's, bit for bit -- int8 included, because a batch of copies has one
    row's outlier columns (tiny-chat's other kernels are batch-invariant: harness.decode.invariant)."""
    import logging

    from harness.core.noise import once_each, repeated
    from harness.score.tf_drift import _batches

    ref, q, items = models
    many = [(f"{k}#{j}", p, t) for k, p, t in items for j in range(3)]
    assert max(len(b) for b in _batches(many)) == 3
    batched = teacher_forced_rows(ref.model, q.model, many, LENGTHS, batching="shape")
    single = teacher_forced_rows(ref.model, q.model, many, LENGTHS, batching="single")
    assert [r["prompt_key"] for r in batched] == [r["prompt_key"] for r in single]
    for a, b in zip(batched, single):
        assert all(a[c] == b[c] or (a[c] != a[c] and b[c] != b[c]) for c in a if isinstance(a[c], float)), a["prompt_key"]
    log = logging.getLogger("bitsandbytes.test")
    with once_each() as seen:
        for _ in range(50):
            log.warning("MatMul8bitLt: inputs will be cast from %s to float16", "bf16")
    assert sum(seen.values()) == 50 and repeated(seen).startswith("50 x bitsandbytes.test: MatMul8bitLt")


def _same(a: dict, b: dict) -> bool:
    return all(a[c] == b[c] or (a[c] != a[c] and b[c] != b[c]) for c in a if isinstance(a[c], float)) and \
        a["tf_kl_steps"] == b["tf_kl_steps"]


def test_rows_batching_equals_one_at_a_time_for_bf16_and_nf4(models):
    """Rows batching (issue 30): outputs of every length in one forward per model. Against one output per forward,
    the logits of bf16 and bitsandbytes nf4 are bitwise equal, so every drift value is too."""
    from harness.decode.probe import rows_chunks, step_logits, step_logits_rows
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    ref, _, items = models
    q4 = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"], "int4")
    pairs = [(p, t) for _, p, t in items]
    assert len({len(p) + len(t) for p, t in pairs}) == len(pairs)  # no two of one shape: rows batching is at work
    for model in (ref.model, q4.model):
        for (p, t), got in zip(pairs, step_logits_rows(model, pairs)):
            assert torch.equal(got, step_logits(model, p, t))
    # three copies of each, in an order that puts different lengths in one forward
    many = [(f"{k}#{j}", p, t) for j in range(3) for k, p, t in items]
    assert len(rows_chunks([(len(p) + len(t) - 1, len(t)) for _, p, t in many], 49_152)) < len(items)
    rows = teacher_forced_rows(ref.model, q4.model, many, LENGTHS)
    single = teacher_forced_rows(ref.model, q4.model, many, LENGTHS, batching="single")
    assert [r["prompt_key"] for r in rows] == [r["prompt_key"] for r in single]
    assert all(_same(a, b) for a, b in zip(rows, single))
    assert any(r["tf_kl_max"] > 0 for r in rows)  # nf4 moves the distribution: these are not zeros compared


def test_rows_batching_int8_is_reproducible_but_depends_on_its_batch_mates(models):
    """What holds for bitsandbytes int8 (LLM.int8 picks outlier columns over every row of a call): the same batch
    gives the same bits twice and a batch of copies gives the lone row's bits, but a row beside other prompts is not
    the lone row (tiny-chat: logits up to 0.125 apart). Its drift is therefore read in one fixed batching per run,
    and int8's own identical rung shows the same dependence (harness.summary.floor: unmeasurable)."""
    from harness.decode.probe import step_logits, step_logits_rows

    _, q, items = models
    pairs = [(p, t) for _, p, t in items]
    once, twice = step_logits_rows(q.model, pairs), step_logits_rows(q.model, pairs)
    assert all(torch.equal(a, b) for a, b in zip(once, twice))
    p, t = pairs[2]
    alone = step_logits(q.model, p, t)
    assert torch.equal(step_logits_rows(q.model, [(p, t), (p, t)])[0], alone)
    assert not all(torch.equal(a, step_logits(q.model, p, t)) for a, (p, t) in zip(once, pairs))


@pytest.fixture(scope="module")
def q4():
    return load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"], "int4")


def _prefixed(items):
    """The outputs again after one long shared prefix (the longest prompt, whole): the shape of a chat template's
    system prompt in front of every prompt."""
    head = list(max((p for _, p, _ in items), key=len))
    return [(list(head) + list(p), t) for _, p, t in items], len(head)


def test_shared_prefix_is_exact_for_bf16_and_nf4_and_reproducible_for_int8(models, q4):
    """TF_VERSION 3 computes the prefix every output of a forward shares once, its keys and values in front of each
    row's own (harness.decode.probe.step_logits_rows ``prefix``). Against a plain full-sequence forward of one output
    (step_logits) the logits are bitwise equal (tolerance 0) for bf16 and nf4, whatever the batch; bitsandbytes int8
    is bitwise reproducible run to run and a batch of copies gives the lone output's bits, as without the prefix."""
    from harness.decode.probe import shared_prefix, step_logits_rows

    ref, q, _ = models
    pairs, n = _prefixed(models[2])
    P = shared_prefix(pairs)
    assert P >= n  # the whole added prefix (and any common start of the prompts after it)
    for model in (ref.model, q4.model):
        got = step_logits_rows(model, pairs, prefix=P)
        assert all(torch.equal(g, step_logits(model, p, t)) for g, (p, t) in zip(got, pairs))
        assert all(torch.equal(a, b) for a, b in zip(got, step_logits_rows(model, pairs)))  # no prefix: the same
        assert all(torch.equal(a, b) for a, b in zip(got, step_logits_rows(model, pairs[::-1], prefix=P)[::-1]))
    once, twice = step_logits_rows(q.model, pairs, prefix=P), step_logits_rows(q.model, pairs, prefix=P)
    assert all(torch.equal(a, b) for a, b in zip(once, twice))
    p, t = pairs[0]
    assert torch.equal(step_logits_rows(q.model, [(p, t), (p, t)], prefix=P)[0],
                       step_logits_rows(q.model, [(p, t)], prefix=P)[0])


def test_shared_prefix_stops_before_the_positions_read(models):
    from harness.decode.probe import shared_prefix, step_logits_rows

    _, _, items = models
    p, t = items[0][1], items[0][2]
    assert shared_prefix([(p, t), (p, t)]) == len(p) - 1  # identical items: up to the last prompt token, not beyond
    assert shared_prefix([(p, t), ([p[0] + 1, *p[1:]], t)]) == 0  # nothing shared
    with pytest.raises(ValueError, match="prefix"):
        step_logits_rows(models[0].model, [(p, t)], prefix=len(p))


def test_variants_read_together_equal_each_read_alone(models, q4):
    """teacher_forced_many reads the reference once per forward for every variant: each variant's rows equal its
    rows read alone, bitwise, bitsandbytes int8 included (each model's forwards are the same ones either way)."""
    from harness.score.tf_drift import teacher_forced_many

    ref, q, items = models
    pairs, _ = _prefixed(items)
    many = [(f"{k}#{j}", p, t) for j in range(2) for (k, _, _), (p, t) in zip(items, pairs)] + list(items)
    clock: dict = {}
    together = teacher_forced_many(ref.model, {"int8": q.model, "int4": q4.model}, many, LENGTHS, clock=clock)
    assert set(clock) == {"reference", "int8", "int4", "kl"} and all(s > 0 for s in clock.values())
    for name, m in (("int8", q.model), ("int4", q4.model)):
        alone = teacher_forced_rows(ref.model, m, many, LENGTHS)
        assert [r["prompt_key"] for r in together[name]] == [r["prompt_key"] for r in alone]
        assert all(_same(a, b) for a, b in zip(together[name], alone))
    single = teacher_forced_rows(ref.model, q4.model, many, LENGTHS, batching="single")
    assert all(_same(a, b) for a, b in zip(together["int4"], single))  # nf4: the prefix path is exact


def _divergence_v2(ref_logits, var_logits, tokens):
    """TF_VERSION 2's step_divergence, verbatim (one chunk): the reference the shared computation must equal."""
    y = torch.as_tensor(list(tokens), dtype=torch.long)
    zr, zq = ref_logits.double(), var_logits.double()
    lr, lq = torch.log_softmax(zr, dim=-1), torch.log_softmax(zq, dim=-1)
    pr = lr.exp()
    terms = torch.where(pr > 0, pr * (lr - lq), torch.zeros_like(pr))
    k = terms.sum(dim=-1).clamp_min(0.0)
    k = torch.where((zr == zq).all(dim=-1), torch.zeros_like(k), k)
    dp = lq.gather(1, y[:, None])[:, 0].exp() - lr.gather(1, y[:, None])[:, 0].exp()
    return k.numpy(), (torch.argmax(zr, dim=-1) == torch.argmax(zq, dim=-1)).numpy(), dp.numpy()


def test_divergences_of_several_variants_equal_the_former_arithmetic():
    """step_divergences shares the reference's side between variants and skips the mask where no probability
    underflows: the values are the former arithmetic's, bit for bit, with and without underflowing tokens."""
    from harness.score.tf_drift import step_divergences

    g = torch.Generator().manual_seed(3)
    steps, V = 7, 300
    ref = torch.randn(steps, V, generator=g) * 4
    ref_inf = ref.clone()
    ref_inf[2, 5] = float("-inf")  # a token the reference gives no mass: masked, not nan
    ref_inf[4, 7] = -1e4  # underflows to 0 in float64 probabilities
    tokens = [int(i) for i in torch.randint(0, V, (steps,), generator=g)]
    for r in (ref, ref_inf):
        vs = [r + torch.randn(steps, V, generator=g) * s for s in (0.01, 1.0)] + [r.clone()]
        vs[1][4, 7] = float("-inf")
        ds = step_divergences(r, vs, tokens, chunk=3)
        for d, v in zip(ds, vs):
            kl, same, dp = _divergence_v2(r, v, tokens)
            assert np.array_equal(d.kl, kl) and np.array_equal(d.same_top1, same) and np.array_equal(d.dp, dp)
        # the variant gives no mass where the reference gives some: infinite; where neither does: nothing (not nan)
        assert ds[1].kl[4] == (np.inf if r is ref else ds[1].kl[4]) and not np.isnan(ds[1].kl).any()
        assert r is ref or np.isfinite(ds[1].kl).all()
        assert (ds[2].kl == 0).all()  # equal logits: exactly 0


def test_variants_are_read_together_only_when_they_fit_in_memory():
    """The merge loads a model's variants at once when harness.run.worker_memory's estimate says they fit in what
    this machine has free, else one at a time (the note says why). SmolLM2-135M's fit anywhere this suite runs; the
    same entry published as 1,000B (4 TB at bf16) does not fit twice anywhere."""
    from harness.run.tf_drift import _fits_together

    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    assert _fits_together(entry, "bf16", ["int8", "int4"]) == [["int8", "int4"]]
    huge = entry.model_copy(update={"params": "1000B"})
    assert _fits_together(huge, "bf16", ["int8", "int4", "fp32"]) == [["int8"], ["int4"], ["fp32"]]


def test_a_sliding_window_model_is_read_without_the_shared_prefix():
    """A sliding-window layer's cache may not hold the prefix: the prefix path refuses (RowsUnsupported) and the
    drift reads every position in the rows' forward instead, with the one-output-per-forward values (random-init
    Mistral, window 6 under 13-token inputs)."""
    from transformers import MistralConfig, MistralForCausalLM

    from harness.decode.probe import shared_prefix, step_logits_rows
    from harness.decode.rows import RowsUnsupported
    from harness.score.tf_drift import teacher_forced_many

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=6, attn_implementation="eager")
    a, b = (MistralForCausalLM(cfg).eval().to(torch.bfloat16) for _ in range(2))
    items = [(f"k{i}", [1, 2, 3, 4, 5, 6, 7, 8] + [9 + i] * (i + 1), [10, 11, 12 + i]) for i in range(4)]
    pairs = [(p, t) for _, p, t in items]
    with pytest.raises(RowsUnsupported, match="sliding"):
        step_logits_rows(a, pairs, prefix=shared_prefix(pairs))
    rows = teacher_forced_many(a, {"q": b}, items, (3,))["q"]
    single = teacher_forced_many(a, {"q": b}, items, (3,), batching="single")["q"]
    assert all(_same(x, y) for x, y in zip(rows, single)) and all(r["tf_kl_mean"] > 0 for r in rows)


def test_the_harness_own_log_lines_are_never_folded():
    """once_each folds third-party repeats only: the harness's own progress lines (one template, many cells) pass."""
    import logging

    from harness.core.noise import once_each

    shown: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            shown.append(record.name)

    h = Keep()
    root, ours = logging.getLogger(), logging.getLogger("harness")
    saved = ours.propagate, ours.level, root.handlers[:]  # the CLI's configure (other tests) may have set them
    root.handlers[:] = [h]
    ours.propagate, ours.level = True, logging.NOTSET
    try:
        with once_each() as seen:
            for name in ("harness.run.cell", "harness.run.cell", "bitsandbytes.x", "bitsandbytes.x"):
                logging.getLogger(name).warning("%s: loading", "cell")
    finally:
        ours.propagate, ours.level, root.handlers[:] = saved
    assert shown == ["harness.run.cell", "harness.run.cell", "bitsandbytes.x"]
    assert dict(seen) == {"bitsandbytes.x: %s: loading": 2}
