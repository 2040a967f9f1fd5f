"""Greedy decoding with per-step capture.

Determinism choices:
- greedy only (``do_sample=False``) with a fresh GenerationConfig, so a model's
  shipped sampling or repetition settings never leak into the run;
- one decode per distinct prompt at the longest length: greedy decoding is
  prefix-consistent, so shorter lengths are truncations;
- the second side of every identical-rung pair is decoded as a separate
  request in a separate batch (replicate 1), so the noise-floor rung measures
  real run-to-run and batch-composition determinism;
- batches hold prompts of one exact token length ("bucket" batching): left
  padding changes the reduction length of the attention matmuls, and in bf16
  that changed hidden states by ~1e-4 (measured on the demo models), which
  would leak batch noise into every perturbed pair;
- a batch never has one row: the M=1 matmul path rounds differently from
  M>1 (measured), so a lone request is decoded next to a discarded copy.

What is captured per step comes from two places that see the *final* numbers:
a logits processor (the scores greedy argmax is taken over, after any
softcapping or scaling inside the model) and a forward hook on the output
embedding that records its input ``h``, the post-final-norm state the
unembedding multiplies.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from harness.decode.prompt_end import PromptEnd, compact
from harness.decode.recorder import StepRecorder, final_states
from harness.decode.records import (  # noqa: F401  (re-exported: the decode API)
    DecodeRequest,
    Generation,
    NonFiniteOutput,
    first_non_finite,
    prompt_key,
)

# 2: exact-length buckets, no one-row batches; 3: head check, head top-1 in the traces;
# 4: traces at the steps the scorer reads (trace_steps), compact prompt-end record;
# 5: rows batching pads small attention groups past torch's oneDNN bf16 threshold (harness.decode.rows._group_pad):
#    a decode cached before could hold a row whose states depended on its batch mates, so none is reused
DECODER_VERSION = "5"

DEFAULT_BATCH_SIZE = 48
"""Prompts per batch: on one CPU thread a Qwen3-sized output head (V = 151,936, bf16) costs per row 0.81 ms in
batches of 16, 0.73 in 32, 0.69 in 48 and 0.89 in 64 at hidden 64 (10.96, 10.04, 9.62, 9.65 ms at hidden 1,024;
measured 2026-12-01, Intel Xeon without avx512_bf16), and rows batching fills batches whatever the lengths."""


def greedy_config(max_new_tokens: int, eos: tuple[int, ...], pad: int, **extra):
    """A fresh greedy GenerationConfig: a model's shipped sampling or repetition settings never apply."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        # no min_new_tokens: even at 0 it adds a MinLengthLogitsProcessor that clones the scores and runs
        # isin every step (a no-op on the tokens; ~10% of a step at V = 151,936)
        eos_token_id=list(eos) if eos else None,
        pad_token_id=pad,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        return_dict_in_generate=True,
        **extra,
    )


def steps_until_eos(row: Sequence[int], eos: set[int]) -> tuple[int, bool]:
    """(number of generated ids before the first EOS, whether an EOS was chosen); the EOS-choosing step is one more."""
    n = next((t for t, x in enumerate(row) if x in eos), None)
    return (n, True) if n is not None else (len(row), False)


@contextmanager
def _quiet_bitsandbytes():
    # bitsandbytes int8 logs on every matmul that it casts bf16 inputs to fp16;
    # the manifest records that once (ModelInfo.quantization).
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_log.level
    bnb_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bnb_log.setLevel(level)


def _generate_rows(loaded, requests: Sequence[DecodeRequest], max_new_tokens: int):
    """``bucket`` / ``padded`` batching: one left-padded ``model.generate`` call; per request (ids, top-2 values
    [S, 2], top-2 ids, states [S, d], prompt-end row), arrays over every step of the call (cut at the EOS later)."""
    import torch

    model, info = loaded.model, loaded.info
    device = next(model.parameters()).device
    rows_in = list(requests) if len(requests) > 1 else [requests[0], requests[0]]  # see module docstring (M=1)
    width = max(len(r.token_ids) for r in rows_in)
    ids = torch.full((len(rows_in), width), info.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows_in), width), dtype=torch.long)
    for b, r in enumerate(rows_in):
        ids[b, width - len(r.token_ids):] = torch.tensor(r.token_ids, dtype=torch.long)
        mask[b, width - len(r.token_ids):] = 1
    rec = StepRecorder()
    with _quiet_bitsandbytes(), final_states(model) as states, torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=greedy_config(max_new_tokens, info.eos_token_ids, info.pad_token_id),
            logits_processor=[rec],
        )
    seqs = out.sequences[:, width:].cpu().numpy()  # rows beyond len(requests) are the M=1 guard copy
    top_vals = torch.stack(rec.top_vals, 1).numpy()  # [B, steps, 2]
    top_ids = torch.stack(rec.top_ids, 1).numpy()
    hidden_t = torch.stack(states, 1)  # [B, steps, d]
    hidden = hidden_t.numpy()
    _check_head_once(loaded, hidden_t[:, 0, :], rec.first_scores)
    return [(seqs[b], top_vals[b], top_ids[b], hidden[b], rec.first_logprobs[b].numpy()) for b in range(len(requests))]


def _loop_rows(loaded, requests: Sequence[DecodeRequest], max_new_tokens: int):
    """``rows`` batching (harness.decode.rows): the same per-request readings, each ending at its EOS step."""
    import torch

    from harness.decode.rows import greedy_rows

    lists = [r.token_ids for r in requests] if len(requests) > 1 else [requests[0].token_ids] * 2  # never M=1
    with _quiet_bitsandbytes():
        rows, h0, scores0 = greedy_rows(loaded, lists, max_new_tokens)
    _check_head_once(loaded, h0, scores0)
    return [(np.asarray(r.chosen, dtype=np.int64), np.stack(r.top_vals), np.stack(r.top_ids), np.stack(r.states),
             r.first_logprobs) for r in rows[: len(requests)]]


def decode_batch(loaded, requests: Sequence[DecodeRequest], max_new_tokens: int, lengths: Sequence[int],
                 batching: str = "bucket") -> list[Generation]:
    """Decode one batch and split it into per-request records (``rows``: mixed lengths; else left-padded generate)."""
    info, tok = loaded.info, loaded.tokenizer
    raw = (_loop_rows if batching == "rows" else _generate_rows)(loaded, requests, max_new_tokens)
    eos = set(info.eos_token_ids)
    gens = []
    for r, (seq, top_vals, top_ids, hidden, first_logprobs) in zip(requests, raw):
        row = seq.tolist()
        n_gen, at_eos = steps_until_eos(row, eos)
        stop = "eos" if at_eos else "length"
        steps = n_gen + (1 if at_eos else 0)
        chosen = np.asarray(row[:steps], dtype=np.int64)
        # Greedy takes argmax; topk may order exact ties differently, so the
        # rival is "the best of the two top entries that was not chosen".
        first_is_chosen = top_ids[:steps, 0] == chosen
        rival_id = np.where(first_is_chosen, top_ids[:steps, 1], top_ids[:steps, 0])
        rival_val = np.where(first_is_chosen, top_vals[:steps, 1], top_vals[:steps, 0])
        chosen_val = np.maximum(top_vals[:steps, 0], top_vals[:steps, 1])
        hmeans = {L: hidden[: max(1, min(L, steps))].mean(axis=0, dtype=np.float64).astype(np.float32) for L in lengths}
        bad = first_non_finite(top_vals[:steps, 0], top_vals[:steps, 1], hidden[:steps], first_logprobs)
        if bad is not None:
            raise NonFiniteOutput(bad[0], r.prompt_key, r.replicate, bad[1])
        gen_ids = tuple(int(x) for x in row[:n_gen])
        gens.append(
            Generation(
                model=info.name,
                variant=info.variant,
                prompt_key=r.prompt_key,
                replicate=r.replicate,
                rendered_text=r.rendered_text,
                n_prompt_tokens=len(r.token_ids),
                gen_ids=gen_ids,
                gen_text=tok.decode(list(gen_ids), skip_special_tokens=False),
                stop_reason=stop,
                trace_top1_id=chosen,
                trace_top1_logit=chosen_val.astype(np.float32),
                trace_top2_id=rival_id.astype(np.int64),
                trace_top2_logit=rival_val.astype(np.float32),
                prompt_end_logprobs=np.asarray(first_logprobs, dtype=np.float32),
                hidden_means=hmeans,
                # Filled at the steps that are read (harness.decode.traces.fill_traces), from these states.
                trace_delta_tcb=np.full(steps, np.nan, np.float32),
                trace_flip_radius=np.full(steps, np.nan, np.float32),
                trace_flip_rival=np.full(steps, -1, np.int64),
                trace_head_top1_id=np.full(steps, -1, np.int64),
                states=np.ascontiguousarray(hidden[:steps]),
            )
        )
    return gens


BATCHING_MODES = ("rows", "bucket", "padded")


def _check_head_once(loaded, h0, first_scores) -> None:
    """Check the closed-form head against the logits greedy used, once per cell (:func:`check_trace_head`).

    A head the closed forms do not support, or one that fails the check, leaves
    every trace nan; the reason is recorded by the cell.
    """
    if first_scores is None or loaded.head_check is not None:
        return
    head = loaded.stability_head()
    if head is not None:
        check_trace_head(loaded, head, h0, first_scores)


def trace_tolerance(model) -> float:
    """Relative tolerance of the head check: 1e-3 (as ``geometry``), or one ulp of the model's compute dtype.

    A bf16 model rounds its logits to 8 significant bits (ulp 7.8e-3 relative);
    the fp32 closed-form head cannot agree better than that with what greedy saw.
    """
    import torch

    dtype = next(model.parameters()).dtype
    eps = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-3
    return max(1e-3, eps)


def check_trace_head(loaded, head, h0, scores0):
    """Check the closed-form head once per cell against the logits greedy took its argmax over.

    Records ``loaded.head_check`` (max row-relative deviation, tolerance, ok);
    returns the head, or None when it fails so every trace of the cell is nan
    with the reason in ``loaded.stability_status``.
    """
    import torch

    spec, _ = head
    with torch.no_grad():
        got = spec.logits(h0.to(device=spec.device, dtype=spec.dtype)).float().cpu()
    ref = scores0.float()
    finite = torch.isfinite(ref).all(dim=1) & torch.isfinite(got).all(dim=1)
    err = (got - ref).abs().amax(dim=1) / ref.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    dev = float(err[finite].max()) if bool(finite.any()) else float("nan")
    tol = trace_tolerance(loaded.model)
    ok = dev <= tol  # nan (no finite row to compare) fails
    loaded.head_check = {"max_rel_dev": dev, "tolerance": tol, "rows": int(ref.shape[0]), "ok": bool(ok)}
    if ok:
        return head
    loaded.stability = None
    loaded.stability_status = (f"head check failed: g(W h + b) misses the model's logits by {dev:.3g} relative "
                             f"(tolerance {tol:.3g}); traces are nan")
    return None


def plan_batches(requests: Sequence[DecodeRequest], batch_size: int, mode: str = "bucket") -> list[list[DecodeRequest]]:
    """Batches of at most ``batch_size``; a prompt's replicate-0 and replicate-1 requests never share a batch.

    ``rows``: by length, as few batches as ``batch_size`` allows, evenly
    filled (no padding enters a reduction, harness.decode.rows, so as
    batch-invariant as ``bucket``); each replicate-1 copy joins the emptiest
    batch without its original (so the identical rung still compares two
    decodes in different company), and only copies that find no room make
    batches of their own. ``bucket``: one exact prompt
    length per batch (no padding; batch-invariant on CPU, see the module
    docstring), replicates in separate batches. ``padded``: similar lengths
    together with left padding (fewer, fuller batches; the identical rung shows
    whether the kernels in use are batch-invariant).
    """
    if mode not in BATCHING_MODES:
        raise ValueError(f"unknown batching mode {mode!r}")
    batches: list[list[DecodeRequest]] = []
    by_length = lambda r: (len(r.token_ids), r.prompt_key)  # noqa: E731
    if mode == "rows":
        first = sorted((r for r in requests if r.replicate == 0), key=by_length)
        copies = sorted((r for r in requests if r.replicate != 0), key=by_length)
        # as few batches as the size allows, filled evenly (a cell of 48 prompts and 2 copies in batches of 48:
        # 25 + 25, not 48 + 2, whose two-row batch costs 15x per row at the output head); two when copies need
        # a batch without their originals
        n = max(1, -(-len(requests) // batch_size), 2 if copies and len(first) > 1 else 1)
        per = -(-len(first) // n) if first else 0
        batches = [first[i : i + per] for i in range(0, len(first), per)] if first else []
        homeless: list[DecodeRequest] = []
        for r in copies:
            room = [b for b in batches if len(b) < batch_size and all(o.prompt_key != r.prompt_key for o in b)]
            (min(room, key=len) if room else homeless).append(r)
        return batches + [homeless[i : i + batch_size] for i in range(0, len(homeless), batch_size)]
    for rep in sorted({r.replicate for r in requests}):
        group = sorted((r for r in requests if r.replicate == rep), key=by_length)
        if mode == "padded":
            batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
            continue
        buckets: dict[int, list[DecodeRequest]] = {}
        for r in group:
            buckets.setdefault(len(r.token_ids), []).append(r)
        for same_length in buckets.values():
            batches += [same_length[i : i + batch_size] for i in range(0, len(same_length), batch_size)]
    return batches


def decode_all(
    loaded,
    requests: Sequence[DecodeRequest],
    max_new_tokens: int,
    lengths: Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    batching: str = "rows",
    traces: str = "all",
) -> list[Generation]:
    """Decode every request in planned batches.

    ``traces``: ``"all"`` fills the closed-form traces at every step of every
    output; ``"deferred"`` leaves them nan and keeps each output's states, so the
    caller fills only the steps it reads (harness.decode.traces.fill_traces: the
    run fills side A's first divergence of every pair, at a fraction of the cost).

    ``rows`` batching on a model it cannot serve (:class:`~harness.decode.rows.RowsUnsupported`,
    raised by the first batch before any output) decodes with ``bucket`` instead;
    ``loaded.batching_used`` (this call's mode) and ``loaded.rows_unsupported``
    (the reason) record it for the manifest. Linear layers run in fixed-size chunks where this machine's
    kernels round by batch size (``loaded.linear_invariance``, probed once: harness.decode.invariant).
    """
    from harness.decode.invariant import invariant_linears
    from harness.decode.rows import RowsUnsupported
    from harness.decode.traces import drop_states, fill_traces

    if traces not in ("all", "deferred"):
        raise ValueError(f"unknown traces mode {traces!r}")
    if batching == "rows" and loaded.rows_unsupported:
        batching = "bucket"  # this model already showed it cannot (the reason is kept)
    out: list[Generation] = []
    todo = plan_batches(requests, batch_size, batching)
    while todo:
        batch = todo.pop(0)
        try:
            with invariant_linears(loaded):  # see harness.decode.invariant
                gens = decode_batch(loaded, batch, max_new_tokens, lengths, batching)
        except RowsUnsupported as exc:
            loaded.rows_unsupported = str(exc)
            batching = "bucket"
            todo = plan_batches([r for b in [batch, *todo] for r in b], batch_size, batching)
            continue
        out += drop_states(fill_traces(loaded, gens)) if traces == "all" else gens
        if progress:
            progress(len(batch))
    loaded.batching_used = batching
    return out
