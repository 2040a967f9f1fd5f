"""Greedy decoding with per-step capture.

Determinism choices:
- greedy only (``do_sample=False``) with a fresh GenerationConfig, so a model's
  shipped sampling or repetition settings never leak into the run;
- one decode per distinct prompt at the longest length: greedy decoding is
  prefix-consistent, so shorter lengths are truncations;
- the second side of every identical-rung pair is decoded as a separate
  request in a separate batch (replicate 1), so the noise-floor rung measures
  real run-to-run and batch-composition determinism.

What is captured per step comes from two places that see the *final* numbers:
a logits processor (the scores greedy argmax is taken over, after any
softcapping or scaling inside the model) and a forward hook on the output
embedding that records its input ``h``, the post-final-norm state the
unembedding multiplies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

DECODER_VERSION = "1"


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
    prompt_end_logprobs: np.ndarray = field(repr=False)
    """Full next-token log-softmax (float32) after the generation prompt."""
    hidden_means: dict[int, np.ndarray] = field(repr=False)
    """Per requested length L: mean of the post-norm states over the first L steps."""

    @property
    def trace_margin(self) -> np.ndarray:
        return self.trace_top1_logit - self.trace_top2_logit


def prompt_key(token_ids: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(token_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


class _StepRecorder:
    """Logits processor: keeps top-2 per step and the full distribution of step 0."""

    def __init__(self) -> None:
        self.top_vals: list = []
        self.top_ids: list = []
        self.first_logprobs = None

    def __call__(self, input_ids, scores):
        import torch

        s = scores.float()
        v, i = torch.topk(s, 2, dim=-1)
        self.top_vals.append(v.cpu())
        self.top_ids.append(i.cpu())
        if self.first_logprobs is None:
            # log_softmax, not log(softmax): tail probabilities underflow in float32.
            self.first_logprobs = torch.log_softmax(s, dim=-1).cpu()
        return scores


def _greedy_config(max_new_tokens: int, eos: tuple[int, ...], pad: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=list(eos) if eos else None,
        pad_token_id=pad,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        return_dict_in_generate=True,
    )


def decode_batch(loaded, requests: Sequence[DecodeRequest], max_new_tokens: int, lengths: Sequence[int]) -> list[Generation]:
    """Decode one batch (left-padded) and split it into per-request records."""
    import torch

    model, tok, info = loaded.model, loaded.tokenizer, loaded.info
    device = next(model.parameters()).device
    width = max(len(r.token_ids) for r in requests)
    ids = torch.full((len(requests), width), info.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width), dtype=torch.long)
    for b, r in enumerate(requests):
        ids[b, width - len(r.token_ids):] = torch.tensor(r.token_ids, dtype=torch.long)
        mask[b, width - len(r.token_ids):] = 1

    states: list = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda mod, inp, out: states.append(inp[0][:, -1, :].float().cpu()))
    rec = _StepRecorder()
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=_greedy_config(max_new_tokens, info.eos_token_ids, info.pad_token_id),
                logits_processor=[rec],
            )
    finally:
        hook.remove()
    seqs = out.sequences[:, width:].cpu().numpy()
    top_vals = torch.stack(rec.top_vals, 1).numpy()  # [B, steps, 2]
    top_ids = torch.stack(rec.top_ids, 1).numpy()
    hidden = torch.stack(states, 1).numpy()  # [B, steps, d]
    eos = set(info.eos_token_ids)
    gens = []
    for b, r in enumerate(requests):
        row = seqs[b].tolist()
        n = next((t for t, x in enumerate(row) if x in eos), None)
        stop = "eos" if n is not None else "length"
        n_gen = n if n is not None else len(row)
        steps = n_gen + (1 if stop == "eos" else 0)
        chosen = np.asarray(row[:steps], dtype=np.int64)
        # Greedy takes argmax; topk may order exact ties differently, so the
        # rival is "the best of the two top entries that was not chosen".
        first_is_chosen = top_ids[b, :steps, 0] == chosen
        rival_id = np.where(first_is_chosen, top_ids[b, :steps, 1], top_ids[b, :steps, 0])
        rival_val = np.where(first_is_chosen, top_vals[b, :steps, 1], top_vals[b, :steps, 0])
        chosen_val = np.maximum(top_vals[b, :steps, 0], top_vals[b, :steps, 1])
        hmeans = {L: hidden[b, : max(1, min(L, steps))].mean(axis=0, dtype=np.float64).astype(np.float32) for L in lengths}
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
            )
        )
    return gens


def plan_batches(requests: Sequence[DecodeRequest], batch_size: int) -> list[list[DecodeRequest]]:
    """Replicate-0 and replicate-1 requests never share a batch; within each, similar lengths batch together."""
    batches: list[list[DecodeRequest]] = []
    for rep in sorted({r.replicate for r in requests}):
        group = sorted((r for r in requests if r.replicate == rep), key=lambda r: (len(r.token_ids), r.prompt_key))
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def decode_all(
    loaded,
    requests: Sequence[DecodeRequest],
    max_new_tokens: int,
    lengths: Sequence[int],
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    out: list[Generation] = []
    for batch in plan_batches(requests, batch_size):
        out += decode_batch(loaded, batch, max_new_tokens, lengths)
        if progress:
            progress(len(batch))
    return out
