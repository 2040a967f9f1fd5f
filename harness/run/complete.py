"""What a cell's outputs need before its pairs are scored: traces at the steps read, full prompt-end rows.

Every pair of a cell is known before decoding, so after decoding the cell knows
exactly what the scorer will read:

- the closed-form traces at side A's first divergence step of every pair
  (``PairScore.div_delta_tcb_a`` / ``div_flip_radius_a``): evaluated there and
  nowhere else (harness.decode.traces explains the cost);
- both sides' full prompt-end distributions (JS and both KLs): present for every
  fresh decode; an output that came from the cache holds only the compact record
  (harness.decode.prompt_end), so its prompt end is decoded again (with
  in-generation capture one forward pass over the prompt, the same batched code
  path as the decode; with the probe the whole probe again).

An output from the cache that lacks a trace step now wanted (another ladder
pairs it differently) is decoded again, so a cached run scores exactly what an
uncached one does (given a deterministic decode, which the identical rung checks).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from harness.decode.greedy import DecodeRequest, Generation, decode_all
from harness.decode.traces import drop_states, fill_traces, missing_steps
from harness.ladder.records import PromptPair
from harness.score.metrics.edit_distance import first_divergence

Key = tuple[str, int]


def wanted_trace_steps(pairs: Sequence[PromptPair], sides: dict[str, tuple[str, str, int]],
                       gens: dict[Key, Generation], max_len: int) -> dict[Key, set[int]]:
    """0-based steps of side A read by the scorer: first divergence (within the longest length) minus one."""
    want: dict[Key, set[int]] = {}
    for p in pairs:
        ka, kb, rep_b = sides[p.pair_id]
        a, b = gens[(ka, 0)], gens[(kb, rep_b)]
        fd = first_divergence(a.gen_ids[:max_len], b.gen_ids[:max_len])
        if fd > 0:
            want.setdefault((ka, 0), set()).add(fd - 1)
    return want


def complete(loaded, gens: Sequence[Generation], reqs: Sequence[DecodeRequest], pairs: Sequence[PromptPair],
             sides: dict[str, tuple[str, str, int]], lengths: Sequence[int],
             redecode: Callable[[list[DecodeRequest]], list[Generation]],
             prompt_ends: Callable[[list[DecodeRequest]], list[Generation]],
             fill: Callable | None = None) -> tuple[list[Generation], dict[str, int], set[Key]]:
    """The outputs with traces at the wanted steps and full prompt-end rows, counts for the cell record,
    and the keys of the outputs decoded again here (their cache rows are to be replaced).

    ``redecode``: the cell's decode of some requests at the longest length (its
    engine and capture); ``prompt_ends``: outputs whose ``prompt_end_logprobs``
    are the ones that decode would give (for in-generation capture a one-token
    decode; for the probe the whole probe, whose prompt-end row depends on the
    length of the pass). ``fill(gens, want)``: the traces filled where the model is (decode workers,
    harness.run.parallel); None or its None answer: filled here with ``loaded``. Returns the outputs in the order given (re-decoded ones
    in place) and ``{"trace_steps_evaluated", "redecoded_for_traces",
    "prompt_ends_redecoded"}``.
    """
    by_key = {(g.prompt_key, g.replicate): g for g in gens}
    req_of = {(r.prompt_key, r.replicate): r for r in reqs}
    want = wanted_trace_steps(pairs, sides, by_key, max(lengths))
    stale = [k for k, steps in want.items() if by_key[k].states is None and missing_steps(by_key[k], steps)]
    if stale:
        for g in redecode([req_of[k] for k in stale]):
            by_key[(g.prompt_key, g.replicate)] = g
    used = {k for p in pairs for k in ((sides[p.pair_id][0], 0), (sides[p.pair_id][1], sides[p.pair_id][2]))}
    no_full = [k for k in sorted(used) if by_key[k].prompt_end_logprobs is None]
    if no_full:
        for g in prompt_ends([req_of[k] for k in no_full]):
            k = (g.prompt_key, g.replicate)
            by_key[k] = dataclasses.replace(by_key[k], prompt_end_logprobs=g.prompt_end_logprobs, prompt_end=g.prompt_end)
    filled = fill(list(by_key.values()), want) if fill is not None else None
    if filled is None:
        filled = drop_states(fill_traces(loaded, list(by_key.values()), want))
    by_key = {(g.prompt_key, g.replicate): g for g in filled}
    counts = {"trace_steps_evaluated": int(sum(len(s) for s in want.values())), "redecoded_for_traces": len(stale),
              "prompt_ends_redecoded": len(no_full)}
    return [by_key[(g.prompt_key, g.replicate)] for g in gens], counts, set(stale)


def one_token_prompt_ends(loaded, batch_size: int, batching: str) -> Callable[[list[DecodeRequest]], list[Generation]]:
    """Prompt ends of in-generation capture: the first step's distribution, from a one-token decode of the
    same requests through the same batched code path (generate's first step is the same prefill)."""
    return lambda reqs: decode_all(loaded, reqs, 1, (1,), batch_size, None, batching, "deferred")
