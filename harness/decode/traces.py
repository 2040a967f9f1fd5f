"""Closed-form stability traces (TCB, flip radius, rival, head top-1) filled in at chosen steps of decoded outputs.

Why not at every step: at a real vocabulary each state costs four O(Vd)
products and a dozen passes over V entries. Measured on a random-init
Qwen3-shaped model (V = 151,936, hidden 64, one thread), one batch of 16
prompts x 64 steps: plain ``generate`` 3.8 s, the traces of all 1,024 states
17 s (and 6 GB). The scorer reads one trace value per pair, at side A's first
divergence step (``PairScore.div_delta_tcb_a``, ``div_flip_radius_a``), so a
run evaluates exactly those steps (harness.run.complete) and ``trace_steps`` says
which ones were evaluated; every other step stays nan / -1, never a guess.
``decode_all(traces="all")`` still evaluates every step for callers that want
whole traces.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

from harness.decode.records import Generation

StepsWanted = Mapping[tuple[str, int], Iterable[int]]
"""(prompt_key, replicate) -> 0-based steps to evaluate."""


def fill_traces(loaded, gens: Sequence[Generation], steps: StepsWanted | None = None) -> list[Generation]:
    """The generations with their traces evaluated at ``steps`` (None: every step) where they hold states.

    Outputs without states (read from a table or the cache) are returned as
    they are. Steps already evaluated are not recomputed. A head the closed
    forms do not support, or one that failed the check against the model's
    logits, gives nan / -1 at the requested steps (they count as evaluated; the
    reason is ``loaded.stability_status``).
    """
    todo: list[tuple[int, int]] = []
    for i, g in enumerate(gens):
        if g.states is None:
            continue
        n = len(g.trace_top1_id)
        want = range(n) if steps is None else steps.get((g.prompt_key, g.replicate), ())
        done = set(g.trace_steps)
        todo += [(i, int(t)) for t in sorted(set(want)) if 0 <= int(t) < n and int(t) not in done]
    if not todo:
        return list(gens)
    head = loaded.stability_head()
    if head is not None and loaded.head_check is not None and not loaded.head_check["ok"]:
        head = None
    if head is None:
        values = {"delta_tcb": np.full(len(todo), np.nan, np.float32), "flip_radius": np.full(len(todo), np.nan, np.float32),
                  "rival_id": np.full(len(todo), -1, np.int64), "top1_id": np.full(len(todo), -1, np.int64)}
    else:
        values = _fixed_chunks(head, np.stack([gens[i].states[t] for i, t in todo]).astype(np.float32))
    by_gen: dict[int, list[tuple[int, int]]] = {}
    for row, (i, t) in enumerate(todo):
        by_gen.setdefault(i, []).append((row, t))
    out = list(gens)
    for i, rows in by_gen.items():
        g = gens[i]
        tcb, radius = g.trace_delta_tcb.astype(np.float32).copy(), g.trace_flip_radius.astype(np.float32).copy()
        rival, top1 = g.trace_flip_rival.astype(np.int64).copy(), g.trace_head_top1_id.astype(np.int64).copy()
        for row, t in rows:
            tcb[t], radius[t] = values["delta_tcb"][row], values["flip_radius"][row]
            rival[t], top1[t] = values["rival_id"][row], values["top1_id"][row]
        out[i] = dataclasses.replace(g, trace_delta_tcb=tcb, trace_flip_radius=radius, trace_flip_rival=rival,
                                     trace_head_top1_id=top1,
                                     trace_steps=tuple(sorted(set(g.trace_steps) | {t for _, t in rows})))
    return out


def _fixed_chunks(head, rows: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`~harness.stability.step_stability` of ``rows`` [R, d], every row evaluated in a chunk of exactly
    ``CHUNK_ROWS`` rows (the last chunk padded with copies of the last row, the padding dropped).

    Why: a matrix product may round by its row count (harness.decode.invariant), so without the padding a state's
    traces could depend on how many other states were filled with it; with it they depend on the state alone, and
    decode workers can fill the states they hold (harness.run.parallel) with the bits of one fill over the whole
    cell (tests/decode/test_traces_chunks.py checks all-at-once against two halves)."""
    import torch

    from harness.stability import step_stability
    from harness.stability.traces import CHUNK_ROWS

    spec, norms = head
    n = len(rows)
    pad = (-n) % CHUNK_ROWS
    if pad:
        rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
    values = step_stability(torch.from_numpy(rows).to(spec.device), spec, norms, chunk=CHUNK_ROWS)
    return {k: v[:n] for k, v in values.items()}


def trace_fields(g: Generation) -> dict:
    """The fields :func:`fill_traces` writes (what a decode worker sends back for an output it filled)."""
    return {"trace_delta_tcb": g.trace_delta_tcb, "trace_flip_radius": g.trace_flip_radius,
            "trace_flip_rival": g.trace_flip_rival, "trace_head_top1_id": g.trace_head_top1_id,
            "trace_steps": g.trace_steps}


def drop_states(gens: Sequence[Generation]) -> list[Generation]:
    """The generations without their in-memory states (what is kept after the traces are filled)."""
    return [g if g.states is None else dataclasses.replace(g, states=None) for g in gens]


def missing_steps(g: Generation, wanted: Iterable[int]) -> list[int]:
    """Wanted steps (within the output) that ``g`` has not evaluated."""
    done = set(g.trace_steps)
    n = len(g.trace_top1_id)
    return sorted({int(t) for t in wanted if 0 <= int(t) < n and int(t) not in done})
