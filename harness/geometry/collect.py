"""Collecting post-norm states: greedy decoding with a hook on the output embedding, per prompt."""

from __future__ import annotations

import torch

from harness.ladder.records import Ladder
from harness.audit.render import render_distinct
from harness.decode.greedy import DecodeRequest, final_states, greedy_config, plan_batches, prompt_key, steps_until_eos
from harness.decode.invariant import invariant_linears
from harness.geometry.records import PromptTrace
from harness.stability.head import check_head


def _rendered_prompts(ladder: Ladder, loaded) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, str, str, str]]]:
    """Distinct rendered prompts (key -> ids) and the pairs as (pair_id, rung, key_a, key_b)."""
    rendered = render_distinct(loaded.tokenizer, loaded.policy, (t for p in ladder.pairs for t in (p.prompt_a, p.prompt_b)))
    key = {text: prompt_key(r.token_ids) for text, r in rendered.items()}
    prompts: dict[str, tuple[int, ...]] = {}
    for text, r in rendered.items():
        prompts.setdefault(key[text], r.token_ids)
    pairs = [(p.pair_id, p.rung, key[p.prompt_a], key[p.prompt_b]) for p in ladder.pairs]
    return prompts, pairs


def collect_states(loaded, prompts: dict[str, tuple[int, ...]], max_new_tokens: int,
                   batch_size: int = 16) -> tuple[dict[str, PromptTrace], float]:
    """Greedy-decode every prompt, capturing h per step; returns traces and the head check's max error.

    Batches hold prompts of one length (no padding) and linear layers run in
    fixed-size chunks where this machine's kernels round by batch size
    (harness.decode.invariant), so a state never depends on what it was
    batched with. The model's own logits of every step are
    compared with g(W h + b) (:func:`check_head`, 1e-3 relative) and then dropped.
    """
    model, info = loaded.model, loaded.info
    device = next(model.parameters()).device
    ctx = info.context_length
    requests = [DecodeRequest(k, prompts[k], 0) for k in prompts
                if ctx is None or len(prompts[k]) + max(max_new_tokens, 1) <= ctx]
    traces: dict[str, PromptTrace] = {}
    worst = 0.0
    eos = set(info.eos_token_ids)
    for batch in plan_batches(requests, batch_size, "bucket"):
        length = len(batch[0].token_ids)
        ids = torch.tensor([list(r.token_ids) for r in batch], dtype=torch.long, device=device)
        # invariant_linears: a state must not depend on its batch's size (AMX kernels round by it, see
        # harness.decode.invariant)
        with invariant_linears(loaded), final_states(model) as states, torch.inference_mode():
            if max_new_tokens > 0:
                config = greedy_config(max_new_tokens, info.eos_token_ids, info.pad_token_id, output_logits=True)
                res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
                step_logits = [x.float().cpu() for x in res.logits]
                seqs = res.sequences[:, length:].cpu().tolist()
            else:
                res = None
                step_logits = [model(input_ids=ids).logits[:, -1, :].float().cpu()]
                seqs = [[] for _ in batch]
        if len(states) != len(step_logits):
            raise RuntimeError(f"captured {len(states)} states for {len(step_logits)} steps")
        H = torch.stack(states, 1)  # [B, steps, d]
        # Step by step, never one [B·steps, V] stack: at V = 151,936, 16 prompts x 32 steps is 311 MB per copy and
        # the check makes three.
        for s, logits in enumerate(step_logits):
            worst = max(worst, check_head(model, H[:, s], logits, strict=False).max_rel_err)
        del step_logits, res
        for b, r in enumerate(batch):
            row = seqs[b]
            n_gen, at_eos = steps_until_eos(row, eos)
            steps = max(1, n_gen + (1 if at_eos else 0)) if max_new_tokens > 0 else 1
            traces[r.prompt_key] = PromptTrace(r.prompt_key, length, tuple(int(x) for x in row[:n_gen]), H[b, :steps].clone())
    return traces, worst
