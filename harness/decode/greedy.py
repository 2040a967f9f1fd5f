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
from harness.decode.recorder import StepRecorder

# 2: exact-length buckets, no one-row batches; 3: head check, head top-1 in the traces;
# 4: traces at the steps the scorer reads (trace_steps), compact prompt-end record
DECODER_VERSION = "4"


@dataclass(frozen=True)
class DecodeRequest:
    prompt_key: str
    """sha256 (16 hex) of the rendered token ids."""
    token_ids: tuple[int, ...]
    replicate: int
    """0 normally; 1 for the independent second decode of an identical-rung prompt."""
    rendered_text: str = ""


@dataclass(frozen=True)
class Generation:
    model: str
    variant: str
    prompt_key: str
    replicate: int
    rendered_text: str
    n_prompt_tokens: int
    gen_ids: tuple[int, ...]
    """Generated ids, EOS excluded."""
    gen_text: str
    stop_reason: str
    """'eos' or 'length'."""
    trace_top1_id: np.ndarray
    """Per step (EOS-choosing step included): chosen token."""
    trace_top1_logit: np.ndarray
    trace_top2_id: np.ndarray
    """Best token other than the chosen one."""
    trace_top2_logit: np.ndarray
    hidden_means: dict[int, np.ndarray] = field(repr=False)
    """Per requested length L: mean of the post-norm states over the first L steps."""
    prompt_end_logprobs: np.ndarray | None = field(default=None, repr=False)
    """Full next-token log-softmax (float32) after the generation prompt: present after a decode, gone once read
    from a table written without ``--store-full-dist`` (see harness.decode.prompt_end)."""
    prompt_end: PromptEnd | None = field(default=None, repr=False)
    """The compact prompt-end record (top-64 log-probabilities, tail mass, statistics); built from the full row
    when not given."""
    trace_delta_tcb: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    """Per step: Token Constraint Bound (eps = 1) of the state that chose the token (nan when unavailable)."""
    trace_flip_radius: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    """Per step: smallest L2 move of h that lets another token overtake the chosen one."""
    trace_flip_rival: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    """Per step: the token that the flip radius is measured to (nearest rival, not always the top-2)."""
    trace_head_top1_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    """Per step: the top-1 of the fp32 closed-form head the traces are computed on (-1 when unavailable).
    Where it differs from trace_top1_id (a near-tie), the TCB and flip radius describe another token."""
    engine: str = "hf"
    """Engine that chose the tokens: 'hf' (transformers generate) or 'vllm'."""
    capture: str = "generate"
    """Where the per-step readings come from: 'generate' (captured while decoding) or 'probe'
    (teacher-forced HF forward over prompt + tokens, harness.decode.probe; trace_top1_id is then the probe's argmax)."""
    probe_agreement: float = float("nan")
    """Share of steps where the probe's argmax is the engine's token (nan: not probed)."""
    probe_first_disagreement: int = -1
    """0-based step of the first disagreement (-1: none, or not probed)."""
    probe_margin_at_disagreement: float = float("nan")
    """logit(probe argmax) - logit(engine token) there (0: an exact tie; nan: no disagreement)."""
    probe_engine_token: int = -1
    """The engine's token at the first disagreement (-1: none)."""
    probe_token: int = -1
    """The probe's argmax at the first disagreement (-1: none)."""
    trace_steps: tuple[int, ...] = ()
    """0-based steps where the closed-form traces were evaluated (harness.decode.traces); nan / -1 elsewhere."""
    states: np.ndarray | None = field(default=None, repr=False, compare=False)
    """[steps, d] float32 post-norm states, kept in memory only until the traces are filled (never stored)."""

    def __post_init__(self) -> None:
        if self.prompt_end is None:
            if self.prompt_end_logprobs is None:
                raise ValueError("a Generation needs the full prompt-end log-probabilities or their compact record")
            object.__setattr__(self, "prompt_end", compact(self.prompt_end_logprobs))

    @property
    def trace_margin(self) -> np.ndarray:
        return self.trace_top1_logit - self.trace_top2_logit


class NonFiniteOutput(Exception):
    """A model produced NaN or infinite logits or hidden states (NaN weights, fp16 overflow).

    Greedy argmax over NaN logits still picks a token, so such a model would
    otherwise decode the same garbage for every prompt and score as perfectly
    stable; the cell is marked ``failed-numerics`` instead.
    """

    def __init__(self, what: str, prompt_key: str, replicate: int, step: int) -> None:
        self.what, self.prompt_key, self.replicate, self.step = what, prompt_key, replicate, step
        super().__init__(f"non-finite {what} at step {step} of prompt {prompt_key} (replicate {replicate})")


def first_non_finite(top1: np.ndarray, top2: np.ndarray, hidden: np.ndarray | None,
                     prompt_end_logprobs: np.ndarray | PromptEnd) -> tuple[str, int] | None:
    """(what, first step) of the first non-finite value of one decode, or None.

    The chosen token's logit and every hidden state must be finite; a rival at
    -inf (a token masked out) and -inf log-probabilities are legitimate, NaN and
    +inf never are. The prompt-end row is the full one or its compact record.
    """
    bad_logit = ~np.isfinite(top1) | np.isnan(top2) | np.isposinf(top2)
    bad_hidden = np.zeros_like(bad_logit) if hidden is None else ~np.isfinite(hidden).all(axis=-1)
    if isinstance(prompt_end_logprobs, PromptEnd):
        bad_end = prompt_end_logprobs.non_finite
    else:
        bad_end = bool(np.isnan(prompt_end_logprobs).any() or np.isposinf(prompt_end_logprobs).any())
    if bad_logit.size and bad_end:
        bad_logit[0] = True  # step 0's full distribution
    steps = np.flatnonzero(bad_logit | bad_hidden)
    if steps.size == 0:
        return None
    t = int(steps[0])
    return ("hidden states" if bad_hidden[t] else "logits"), t  # the hidden state is the cause when both are


def prompt_key(token_ids: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(token_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


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


@contextmanager
def final_states(model):
    """Collects, per forward pass, the last position's input to the output embedding (post-final-norm ``h``, float32, CPU)."""
    states: list = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, inp, out: states.append(inp[0][:, -1, :].float().cpu()))
    try:
        yield states
    finally:
        hook.remove()


def steps_until_eos(row: Sequence[int], eos: set[int]) -> tuple[int, bool]:
    """(number of generated ids before the first EOS, whether an EOS was chosen); the EOS-choosing step is one more."""
    n = next((t for t, x in enumerate(row) if x in eos), None)
    return (n, True) if n is not None else (len(row), False)


def decode_batch(loaded, requests: Sequence[DecodeRequest], max_new_tokens: int, lengths: Sequence[int]) -> list[Generation]:
    """Decode one batch (left-padded) and split it into per-request records."""
    import torch

    model, tok, info = loaded.model, loaded.tokenizer, loaded.info
    device = next(model.parameters()).device
    rows_in = list(requests) if len(requests) > 1 else [requests[0], requests[0]]  # see module docstring (M=1)
    width = max(len(r.token_ids) for r in rows_in)
    ids = torch.full((len(rows_in), width), info.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows_in), width), dtype=torch.long)
    for b, r in enumerate(rows_in):
        ids[b, width - len(r.token_ids):] = torch.tensor(r.token_ids, dtype=torch.long)
        mask[b, width - len(r.token_ids):] = 1

    rec = StepRecorder()
    # bitsandbytes int8 logs on every matmul that it casts bf16 inputs to fp16;
    # the manifest records that once (ModelInfo.quantization).
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    bnb_level = bnb_log.level
    bnb_log.setLevel(logging.ERROR)
    try:
        with final_states(model) as states, torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=greedy_config(max_new_tokens, info.eos_token_ids, info.pad_token_id),
                logits_processor=[rec],
            )
    finally:
        bnb_log.setLevel(bnb_level)
    seqs = out.sequences[:, width:].cpu().numpy()  # rows beyond len(requests) are the M=1 guard copy
    top_vals = torch.stack(rec.top_vals, 1).numpy()  # [B, steps, 2]
    top_ids = torch.stack(rec.top_ids, 1).numpy()
    hidden_t = torch.stack(states, 1)  # [B, steps, d]
    hidden = hidden_t.numpy()
    _check_head_once(loaded, hidden_t[:, 0, :], rec.first_scores)
    eos = set(info.eos_token_ids)
    gens = []
    for b, r in enumerate(requests):
        row = seqs[b].tolist()
        n_gen, at_eos = steps_until_eos(row, eos)
        stop = "eos" if at_eos else "length"
        steps = n_gen + (1 if at_eos else 0)
        chosen = np.asarray(row[:steps], dtype=np.int64)
        # Greedy takes argmax; topk may order exact ties differently, so the
        # rival is "the best of the two top entries that was not chosen".
        first_is_chosen = top_ids[b, :steps, 0] == chosen
        rival_id = np.where(first_is_chosen, top_ids[b, :steps, 1], top_ids[b, :steps, 0])
        rival_val = np.where(first_is_chosen, top_vals[b, :steps, 1], top_vals[b, :steps, 0])
        chosen_val = np.maximum(top_vals[b, :steps, 0], top_vals[b, :steps, 1])
        hmeans = {L: hidden[b, : max(1, min(L, steps))].mean(axis=0, dtype=np.float64).astype(np.float32) for L in lengths}
        bad = first_non_finite(top_vals[b, :steps, 0], top_vals[b, :steps, 1], hidden[b, :steps],
                               rec.first_logprobs[b].numpy())
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
                prompt_end_logprobs=rec.first_logprobs[b].numpy().astype(np.float32),
                hidden_means=hmeans,
                # Filled at the steps that are read (harness.decode.traces.fill_traces), from these states.
                trace_delta_tcb=np.full(steps, np.nan, np.float32),
                trace_flip_radius=np.full(steps, np.nan, np.float32),
                trace_flip_rival=np.full(steps, -1, np.int64),
                trace_head_top1_id=np.full(steps, -1, np.int64),
                states=np.ascontiguousarray(hidden[b, :steps]),
            )
        )
    return gens


BATCHING_MODES = ("bucket", "padded")


def _check_head_once(loaded, h0, first_scores) -> None:
    """Check the closed-form head against the logits greedy used, once per cell (:func:`check_trace_head`).

    A head the closed forms do not support, or one that fails the check, leaves
    every trace nan; the reason is recorded by the cell.
    """
    if first_scores is None or getattr(loaded, "head_check", None) is not None:
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
    with the reason in ``loaded.stability_note``.
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
    loaded._stability = None
    loaded.stability_note = (f"head check failed: g(W h + b) misses the model's logits by {dev:.3g} relative "
                             f"(tolerance {tol:.3g}); traces are nan")
    return None


def plan_batches(requests: Sequence[DecodeRequest], batch_size: int, mode: str = "bucket") -> list[list[DecodeRequest]]:
    """Replicate-0 and replicate-1 requests never share a batch.

    ``bucket``: one exact prompt length per batch (no padding; batch-invariant
    on CPU, see the module docstring). ``padded``: similar lengths together with
    left padding (fewer, fuller batches; the identical rung shows whether the
    kernels in use are batch-invariant).
    """
    if mode not in BATCHING_MODES:
        raise ValueError(f"unknown batching mode {mode!r}")
    batches: list[list[DecodeRequest]] = []
    for rep in sorted({r.replicate for r in requests}):
        group = sorted((r for r in requests if r.replicate == rep), key=lambda r: (len(r.token_ids), r.prompt_key))
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
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    batching: str = "bucket",
    traces: str = "all",
) -> list[Generation]:
    """Decode every request in planned batches.

    ``traces``: ``"all"`` fills the closed-form traces at every step of every
    output; ``"deferred"`` leaves them nan and keeps each output's states, so the
    caller fills only the steps it reads (harness.decode.traces.fill_traces: the
    run fills side A's first divergence of every pair, at a fraction of the cost).
    """
    from harness.decode.traces import drop_states, fill_traces

    if traces not in ("all", "deferred"):
        raise ValueError(f"unknown traces mode {traces!r}")
    out: list[Generation] = []
    for batch in plan_batches(requests, batch_size, batching):
        gens = decode_batch(loaded, batch, max_new_tokens, lengths)
        out += drop_states(fill_traces(loaded, gens)) if traces == "all" else gens
        if progress:
            progress(len(batch))
    return out
