"""Teacher-forced probe: one forward pass of the HF model over prompt + an engine's tokens.

An engine (transformers ``generate``, vLLM) only has to produce greedy token
ids. Everything the scorer reads per step -- top-1/top-2 logits and margins,
the post-norm states and their means, the prompt-end distribution, the
closed-form stability traces -- comes from this pass, and the pass also says
whether the HF model's argmax reproduces every token the engine chose
(:class:`~harness.decode.records.Agreement`). A disagreement is a finding about
two engines' numerics: it is recorded, the engine's tokens are never changed.

Numerics: causal attention makes position t of a longer sequence see exactly
what step t of the decode saw, but the matmuls run over a different number of
rows than a KV-cached decode step, so in bf16 the logits agree with the
in-generation capture to rounding, not bit for bit (measured in
tests/decode/test_probe.py). Each output is probed alone (no padding, no batch
neighbours), so two identical requests give bit-identical probes: the
identical rung stays a test of the engine.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from harness.decode.records import Agreement, ProbeInput, ProbeResult

PROBE_VERSION = "1"


def teacher_forced(model, item: ProbeInput, lengths: Sequence[int], head=None,
                   check_head: Callable | None = None) -> ProbeResult:
    """Probe one output with a causal LM (any transformers model with an output embedding).

    ``head``: ``(HeadSpec, row norms)`` for the closed-form traces
    (``LoadedModel.stability_head()``), or None to leave them nan.
    ``check_head(head, h0, logits0)``: checks the closed-form head against this
    pass's first-step logits (as harness.decode.greedy.check_trace_head does
    for generate) and returns the head to use, or None when it fails.
    """
    import torch

    steps = len(item.tokens)
    if steps == 0:
        raise ValueError("nothing to probe: the engine chose no token")
    if not item.prompt_ids:
        raise ValueError("nothing to probe: empty prompt")
    n = len(item.prompt_ids)
    # The last token is never fed: its logits would be the step after the output.
    ids = torch.tensor([list(item.prompt_ids) + list(item.tokens[:-1])], dtype=torch.long)
    device = next(model.parameters()).device
    states: list = []
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: states.append(inp[0][0]))
    try:
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), use_cache=False)
    finally:
        hook.remove()
    rows = slice(n - 1, n - 1 + steps)
    logits = out.logits[0, rows].float()  # [steps, V]; greedy compares exactly these upcast values
    h = states[0][rows].float()
    engine = torch.tensor(item.tokens, dtype=torch.long, device=logits.device)
    # torch.argmax is what greedy generate takes (the first index among exact ties).
    top1 = torch.argmax(logits, dim=-1)
    top1_val = logits.gather(1, top1[:, None])[:, 0]
    others = logits.scatter(1, top1[:, None], float("-inf"))
    top2 = torch.argmax(others, dim=-1)
    top2_val = others.gather(1, top2[:, None])[:, 0]
    engine_val = logits.gather(1, engine[:, None])[:, 0]
    prompt_end = torch.log_softmax(logits[0], dim=-1)  # log_softmax: tail probabilities underflow in log(softmax)

    top1_np = top1.cpu().numpy().astype(np.int64)
    same = top1_np == np.asarray(item.tokens, dtype=np.int64)
    first = int(np.argmin(same)) if not same.all() else -1
    gap = (top1_val - engine_val).cpu().numpy().astype(np.float32)
    agreement = Agreement(
        steps=steps, agreeing=int(same.sum()), first_disagreement=first,
        margin_at_disagreement=float(gap[first]) if first >= 0 else float("nan"),
        engine_token=int(item.tokens[first]) if first >= 0 else -1,
        probe_token=int(top1_np[first]) if first >= 0 else -1,
    )
    states_np = h.cpu().numpy().astype(np.float32)
    means = {int(L): states_np[: max(1, min(int(L), steps))].mean(axis=0, dtype=np.float64).astype(np.float32) for L in lengths}
    if head is not None and check_head is not None:
        head = check_head(head, h[:1], logits[:1].cpu())
    stab = _stability(h, head)
    return ProbeResult(
        top1_id=top1_np, top1_logit=top1_val.cpu().numpy().astype(np.float32),
        top2_id=top2.cpu().numpy().astype(np.int64), top2_logit=top2_val.cpu().numpy().astype(np.float32),
        engine_logit=engine_val.cpu().numpy().astype(np.float32),
        prompt_end_logprobs=prompt_end.cpu().numpy().astype(np.float32), states=states_np, hidden_means=means,
        delta_tcb=stab["delta_tcb"], flip_radius=stab["flip_radius"], flip_rival=stab["rival_id"],
        head_top1_id=stab["top1_id"], agreement=agreement,
    )


def _stability(h, head) -> dict[str, np.ndarray]:
    steps = h.shape[0]
    if head is None:
        return {"delta_tcb": np.full(steps, np.nan, np.float32), "flip_radius": np.full(steps, np.nan, np.float32),
                "rival_id": np.full(steps, -1, np.int64), "top1_id": np.full(steps, -1, np.int64)}
    from harness.stability import step_stability

    spec, norms = head
    return step_stability(h.to(spec.device), spec, norms)


def probe_outputs(loaded, items: Sequence[ProbeInput], lengths: Sequence[int]) -> list[ProbeResult]:
    """Probe several outputs of one loaded model (harness.models.loading.LoadedModel), one forward each."""
    head = loaded.stability_head()
    return [teacher_forced(loaded.model, item, lengths, head) for item in items]


def step_logits(model, prompt_ids: Sequence[int], tokens: Sequence[int]):
    """Logits (float32 torch tensor [steps, V]) of every decoding step of ``tokens`` after ``prompt_ids``, teacher-forced.

    Row t is the distribution the model gives at step t when fed the prompt and
    ``tokens[:t]``: the same rows :func:`teacher_forced` reads, without its
    per-step traces. Only those rows are computed (``logits_to_keep``), so the
    output is steps x V, never (prompt + steps) x V; callers reduce it in chunks
    (harness.score.tf_drift). The model's own output maps (soft-capping, scaling)
    are applied, because these are the logits its forward returns.
    """
    import torch

    steps = len(tokens)
    if steps == 0 or not prompt_ids:
        raise ValueError("nothing to probe: empty prompt or no token")
    ids = torch.tensor([list(prompt_ids) + list(tokens[:-1])], dtype=torch.long, device=next(model.parameters()).device)
    with torch.inference_mode():
        try:
            out = model(input_ids=ids, use_cache=False, logits_to_keep=steps)
        except TypeError:  # a model class without logits_to_keep: every row, then the last `steps`
            out = model(input_ids=ids, use_cache=False)
    return out.logits[0, -steps:].float()


def step_logits_batch(model, items: Sequence[tuple[Sequence[int], Sequence[int]]]):
    """:func:`step_logits` of several (prompt ids, tokens) of one shape in one forward: [batch, steps, V] float32.

    Every item must have the same input length (prompt + tokens - 1) and the same number of steps: no padding, so
    no row attends to another's positions (the caller groups by shape).
    """
    import torch

    shapes = {(len(p) + len(t) - 1, len(t)) for p, t in items}
    if len(shapes) != 1:
        raise ValueError(f"items of different shapes in one batch: {sorted(shapes)}")
    ((_, steps),) = shapes
    if steps == 0 or any(not p for p, _ in items):
        raise ValueError("nothing to probe: empty prompt or no token")
    ids = torch.tensor([list(p) + list(t[:-1]) for p, t in items], dtype=torch.long,
                       device=next(model.parameters()).device)
    with torch.inference_mode():
        try:
            out = model(input_ids=ids, use_cache=False, logits_to_keep=steps)
        except TypeError:  # a model class without logits_to_keep: every row, then the last `steps`
            out = model(input_ids=ids, use_cache=False)
    return out.logits[:, -steps:].float()


ROWS_LOGIT_BUDGET = 1 << 26
"""float32 logits one rows forward may return (256 MiB): the steps of its outputs x V. SmolLM2 (V = 49,152) fits
1,365 steps (42 outputs of 32); Qwen3 (V = 151,936) 441 (one output of 256; a forward never has fewer than one)."""
ROWS_PAD_SHARE = 0.1
"""Left padding a rows forward may add, as a share of its real positions, before the next length starts a new one:
padded positions run through every linear layer (not through attention), so they cost what real ones do. 0.1
(was 0.25): on SmolLM2's 48 task prompts after their shared prefix, 2,213 positions computed in 7 forwards
against 2,521 in 4, 3-5% less CPU time (smaller forwards run their products less efficiently)."""


def rows_chunks(shapes: Sequence[tuple[int, int]], vocab: int, pad_share: float | None = None) -> list[list[int]]:
    """Indices of (input length, steps) ``shapes`` grouped into rows forwards: sorted by input length, neighbours
    share one while its padding stays within ``pad_share`` (default ``ROWS_PAD_SHARE``) of its real positions and
    its logits within
    ``ROWS_LOGIT_BUDGET``. Which outputs share a forward changes no value where the kernels are batch-invariant
    (:func:`step_logits_rows`); the grouping only sets the cost."""
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0], i))
    chunks: list[list[int]] = []
    for i in order:
        cur = chunks[-1] if chunks else None
        if cur is not None:
            lens = [shapes[j][0] for j in cur] + [shapes[i][0]]
            width, real = max(lens), sum(lens)
            steps = sum(shapes[j][1] for j in [*cur, i])  # the rows the output head returns (step_logits_rows)
            share = ROWS_PAD_SHARE if pad_share is None else pad_share
            if width * len(lens) - real <= share * real and steps * vocab <= ROWS_LOGIT_BUDGET:
                cur.append(i)
                continue
        chunks.append([i])
    return chunks


def shared_prefix(items: Sequence[tuple[Sequence[int], Sequence[int]]]) -> int:
    """Leading tokens every (prompt ids, tokens) item's input shares, never reaching a position whose logits are read
    (each item's last prompt token onwards): what :func:`step_logits_rows` may compute once. 0 below 2 tokens."""
    seqs = [list(p) + list(t[:-1]) for p, t in items]
    cap = min(len(p) - 1 for p, _ in items) if items else 0
    n = 0
    while n < cap and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n if n >= 2 else 0


def _prefix_cache(model, ids, rows: int, inner: str, device):
    """The keys and values of the shared prefix ``ids``, computed once (one row, its own forward), then one cache
    whose every one of ``rows`` rows holds them."""
    import torch
    from transformers import DynamicCache

    from harness.decode.rows import _RowsState, _cache_kwarg

    one = DynamicCache(config=model.config)
    state = _RowsState(lens=[len(ids)], inner=inner)
    model(input_ids=torch.tensor([list(ids)], dtype=torch.long, device=device),
          position_ids=torch.arange(len(ids), device=device)[None], use_cache=True, logits_to_keep=1,
          stabprobe_rows=state, **{_cache_kwarg(model): one})
    cache = DynamicCache(config=model.config)
    for layer, lay in enumerate(one.layers):
        cache.update(lay.keys.expand(rows, -1, -1, -1), lay.values.expand(rows, -1, -1, -1), layer)
    return cache


def step_logits_rows(model, items: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = 0,
                     prefix: int = 0):
    """:func:`step_logits` of (prompt ids, tokens) of any lengths in one forward ("rows" batching): a list of
    float32 [steps_i, V] tensors, one per item, in order.

    Why: bitsandbytes' per-call cost dominated the teacher-forced pass when only outputs of one shape shared a
    forward (:func:`step_logits_batch`; a ladder's outputs have many shapes). How: the rows are left-padded to the
    longest, positions count from each row's first real token, and attention runs per group of equal-length rows
    on that group's own positions (harness.decode.rows, the decode's own batching, with its padding of small groups
    past oneDNN's bmm threshold), so no padded key enters a row's attention and every other layer works row by
    row. A row's logits then equal the one-at-a-time :func:`step_logits` bit for bit wherever the linear layers
    are batch-invariant (harness.decode.invariant: bf16 and bitsandbytes nf4 here; tests/score/test_tf_drift.py).
    bitsandbytes int8 (LLM.int8) is not: it picks its outlier columns over every row of a call, padding included,
    so its rows depend on their batch mates. Raises harness.decode.rows.RowsUnsupported for a model whose layers
    do not all run the per-group attention (the caller falls back to one shape per forward).

    ``prefix`` (:func:`shared_prefix`): the first ``prefix`` tokens, the same in every item, are computed once, in a
    forward of their own, and their keys and values serve every row; the rows' forward then runs only the
    positions after them, the prefix's keys in front of each group's own (issue 30: SmolLM2's chat template puts
    the same system prompt before every prompt, a third of the positions of the task ladder). Causal attention
    makes the prefix's keys and values what the full forward computes at those positions, up to how a kernel
    rounds a different number of rows or queries; tests/score/test_tf_drift.py measures how close.
    """
    import torch

    from harness.decode.rows import RowsUnsupported, _attention_layers, _cache_kwarg, _RowsState, rows_attention

    if not items:
        return []
    if any(not p or not t for p, t in items):
        raise ValueError("nothing to probe: empty prompt or no token")
    seqs = [list(p) + list(t[:-1]) for p, t in items]
    if prefix and (prefix > min(len(p) for p, _ in items) - 1 or any(s[:prefix] != seqs[0][:prefix] for s in seqs)):
        raise ValueError(f"prefix {prefix}: not shared by every item, or it reaches a position whose logits are read")
    lens = [len(s) - prefix for s in seqs]
    steps = [len(t) for _, t in items]
    width, keep = max(lens), max(steps)
    device = next(model.parameters()).device
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, width - lens[b]:] = torch.tensor(s[prefix:], dtype=torch.long)
    pos = prefix + (torch.arange(width)[None, :] - torch.tensor([width - n for n in lens])[:, None]).clamp_min(0)
    # Only the rows read go through the output head: row b's last steps[b] of the `keep` kept positions, gathered
    # into one [1, sum(steps), d] input (a forward's outputs end at many lengths; the head cost 28 M multiply-adds
    # a row at SmolLM2's vocabulary, a quarter of the rest of the model's). What the model does after its head
    # (soft-capping, scaling) works element by element, so it applies to the gathered rows as to all of them.
    take = torch.cat([torch.arange(b * keep + keep - n, b * keep + keep) for b, n in enumerate(steps)]).to(device)

    def gather(_module, args):
        h = args[0]
        return (h.reshape(-1, h.shape[-1]).index_select(0, take)[None], *args[1:])

    with rows_attention(model) as inner, torch.inference_mode():
        extra = {}
        if prefix:
            extra = {_cache_kwarg(model): _prefix_cache(model, seqs[0][:prefix], len(seqs), inner, device)}
        state = _RowsState(lens=lens, inner=inner, prefix=prefix)
        hook = model.get_output_embeddings().register_forward_pre_hook(gather)
        try:
            out = model(input_ids=ids.to(device), position_ids=pos.to(device), use_cache=bool(prefix),
                        logits_to_keep=keep, stabprobe_rows=state, **extra)
        finally:
            hook.remove()
    layers = _attention_layers(model)
    if len(state.seen) != layers:
        raise RowsUnsupported(f"{len(state.seen)} of {layers} layers ran the per-group attention")
    logits = out.logits[0]
    if logits.shape[0] != len(take):
        raise RowsUnsupported(f"the output head returned {logits.shape[0]} rows for {len(take)} gathered")
    return list(logits.float().split(steps))
