"""Decode: the harness's decoding of the default ladder versus a naive baseline (target >= 3×).

Model ``tiny-chat`` (registry, bf16, eager attention), ladder
``ladders/default.yaml``, lengths (64, 512), one torch thread.

- harness (timed from the pair list): ``audit_pairs`` + ``decode_requests`` +
  ``decode_all`` at the longest length (one decode per distinct rendered
  prompt, exact-length buckets of up to 16 rows, shorter lengths are prefixes;
  the identical rung's second side is its own decode in its own batch). It
  also captures per-step top-2 logits, hidden states and the closed-form
  stability traces, which the baseline does not.
- naive (timed from the pair list): for every kept pair, each side rendered
  through the chat template, then for each length separately one
  ``model.generate(input_ids, do_sample=False, max_new_tokens=L)`` with batch 1
  (no de-duplication, no batching, no prefix reuse across lengths).

What is counted: both routes deliver the same thing, one greedy output per
kept pair × side × length (EOS excluded, cut at L). The figure is that
deliverable's size in tokens, Σ len(output[:L]), divided by each route's wall
time ("useful tokens per second"); the ratio is therefore the ratio of the two
wall times. Raw generated tokens per second (everything each route decoded)
are reported too. With ``--quick`` the baseline runs on a fixed, seeded subset
of pairs and its time is extrapolated per pair (said so in the output).

Also checked: every identical-rung pair is exact in the harness decode (both
replicates have the same tokens, the same per-step logits, prompt-end
log-probabilities, hidden-state means and stability traces, bit for bit).
"""

from __future__ import annotations

import logging
import random

import numpy as np

from benchmarks.common import Outcome, Row, at_least, fmt_s, timed

MODEL = "tiny-chat"
LADDER = "ladders/default.yaml"
LENGTHS = (64, 512)
TARGET = 3.0
QUICK_SUBSET = 48


def _same(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))


def replicates_identical(g0, g1) -> bool:
    fields = ("trace_top1_id", "trace_top1_logit", "trace_top2_id", "trace_top2_logit", "prompt_end_logprobs",
              "trace_delta_tcb", "trace_flip_radius", "trace_flip_rival")
    return (g0.gen_ids == g1.gen_ids and all(_same(getattr(g0, f), getattr(g1, f)) for f in fields)
            and all(_same(g0.hidden_means[L], g1.hidden_means[L]) for L in g0.hidden_means))


def naive_outputs(loaded, pairs, lengths):
    """One batch-1 generate call per pair × side × length; returns {(pair_id, side, L): ids}, generated tokens."""
    import torch

    from harness.audit.render import render_prompt

    model, tok, info = loaded.model, loaded.tokenizer, loaded.info
    eos = set(info.eos_token_ids)
    out, generated = {}, 0
    with torch.inference_mode():
        for p in pairs:
            for side, text in (("a", p.prompt_a), ("b", p.prompt_b)):
                ids = torch.tensor([render_prompt(tok, text, loaded.policy).token_ids], dtype=torch.long)
                for L in lengths:
                    seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=L, pad_token_id=info.pad_token_id,
                                         eos_token_id=list(info.eos_token_ids))
                    new = seq[0, ids.shape[1]:].tolist()
                    generated += len(new)  # decode steps, the EOS-choosing one included
                    n = next((i for i, x in enumerate(new) if x in eos), len(new))
                    out[(p.pair_id, side, L)] = tuple(new[:n])
    return out, generated


def run(quick: bool = False) -> Outcome:
    from harness.audit.tokens import audit_pairs
    from harness.decode.requests import decode_requests
    from harness.decode.greedy import decode_all, plan_batches
    from harness.ladder.load import load_ladder
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry
    from harness.score.pairs import kept_pairs

    logging.getLogger("transformers").setLevel(logging.ERROR)
    entry = load_registry(DEFAULT_REGISTRY).by_name()[MODEL]
    ladder = load_ladder(LADDER)
    loaded = load_model(entry, "bf16")
    Lmax = max(LENGTHS)

    def harness_route():
        rows, rendered = audit_pairs(entry.name, loaded.tokenizer, loaded.policy, ladder.pairs,
                                     context_len=loaded.info.context_length, max_new_tokens=Lmax)
        reqs, sides = decode_requests(ladder.pairs, rows, rendered)
        gens = decode_all(loaded, reqs, Lmax, LENGTHS, 16, None, "bucket")
        return rows, reqs, sides, gens

    # untimed warm-up of both routes (lazy initialisation inside torch/transformers)
    small = ladder.pairs[:2]
    r0, rd0 = audit_pairs(entry.name, loaded.tokenizer, loaded.policy, small, context_len=loaded.info.context_length,
                          max_new_tokens=8)
    decode_all(loaded, decode_requests(small, r0, rd0)[0], 8, (8,))
    naive_outputs(loaded, small[:1], (8,))

    t_h, (rows, reqs, sides, gens) = timed(harness_route)
    kept = kept_pairs(ladder.pairs, rows)
    by_key = {(g.prompt_key, g.replicate): g for g in gens}

    subset = kept
    if quick and len(kept) > QUICK_SUBSET:
        subset = random.Random(0).sample(kept, QUICK_SUBSET)
    t_n_run, (naive, naive_generated) = timed(lambda: naive_outputs(loaded, subset, LENGTHS))
    t_n = t_n_run * len(kept) / len(subset)

    # the deliverable: one output per kept pair × side × length, cut at L
    useful = 0
    agree = total = 0
    for p in kept:
        ka, kb, rep_b = sides[p.pair_id]
        for side, g in (("a", by_key[(ka, 0)]), ("b", by_key[(kb, rep_b)])):
            for L in LENGTHS:
                useful += len(g.gen_ids[:L])
                if (p.pair_id, side, L) in naive:
                    total += 1
                    agree += naive[(p.pair_id, side, L)] == tuple(g.gen_ids[:L])
    harness_generated = sum(len(g.trace_top1_id) for g in gens)  # decode steps, EOS step included
    naive_generated_all = naive_generated * len(kept) / len(subset)

    ident = [p for p in kept if p.rung == "identical"]
    exact = sum(replicates_identical(by_key[(sides[p.pair_id][0], 0)], by_key[(sides[p.pair_id][1], 1)]) for p in ident)

    ratio = t_n / t_h
    extrap = f" (baseline on {len(subset)} of {len(kept)} pairs, extrapolated per pair)" if len(subset) < len(kept) else ""
    row = at_least(
        "decode",
        f"harness {useful / t_h:.0f} vs naive {useful / t_n:.0f} useful tok/s "
        f"({fmt_s(t_h)} vs {fmt_s(t_n)}){extrap}",
        ratio, TARGET,
    )
    row.info.append(
        f"decode: {len(kept)} kept pairs x 2 sides x {len(LENGTHS)} lengths = {len(kept) * 2 * len(LENGTHS)} outputs, "
        f"{useful} useful tokens; harness: {len(reqs)} distinct decodes in {len(plan_batches(reqs, 16))} batches, "
        f"{harness_generated} decode steps ({harness_generated / t_h:.0f} raw steps/s); naive: "
        f"{len(subset) * 2 * len(LENGTHS)} generate calls run, {naive_generated} decode steps "
        f"({naive_generated / t_n_run:.0f} raw steps/s){extrap} (steps count the EOS-choosing one); "
        f"naive and harness outputs equal on {agree}/{total}"
    )
    ident_row = Row("decode/identical", f"{exact}/{len(ident)} identical-rung pairs bit-exact (tokens, logits, traces)",
                    "all exact (metric = 0)", None, "-", bool(ident) and exact == len(ident))
    figures = {
        "model": MODEL, "ladder": LADDER, "lengths": list(LENGTHS), "kept_pairs": len(kept),
        "distinct_decodes": len(reqs), "harness_s": t_h, "naive_s_run": t_n_run, "naive_s": t_n,
        "naive_pairs_run": len(subset), "naive_extrapolated": len(subset) < len(kept),
        "useful_tokens": useful, "harness_useful_tok_s": useful / t_h, "naive_useful_tok_s": useful / t_n,
        "harness_decode_steps": harness_generated, "naive_decode_steps_run": naive_generated,
        "naive_decode_steps_all": naive_generated_all, "ratio": ratio,
        "outputs_equal": agree, "outputs_compared": total,
        "identical_pairs": len(ident), "identical_exact": exact,
    }
    return Outcome([row, ident_row], figures)
