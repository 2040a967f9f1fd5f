"""How much of an output sits in a repeating n-gram cycle (a decoding loop).

A loop is a stretch of at least ``MIN_COPIES`` back-to-back copies of one block
of ``p <= MAX_PERIOD`` tokens, ``MIN_LOOP_TOKENS`` tokens or more in all
(``the cat the cat the cat`` is three copies of a 2-token block). The loop
share of an output is the fraction of its tokens inside such stretches. Greedy
decoding that falls into a cycle never leaves it, so a looping output is
mostly loop: the measure separates "answered, then repeated a phrase once"
(share near 0) from "stuck" (share near 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_PERIOD = 64
"""Longest repeated block considered (tokens)."""
MIN_COPIES = 3
"""Copies of the block needed to call it a cycle (two could be a deliberate echo)."""
MIN_LOOP_TOKENS = 8
"""Shortest stretch counted: three newlines in a row are formatting, not a loop."""


def loop_mask(ids: Sequence[int], max_period: int = MAX_PERIOD) -> np.ndarray:
    """Boolean per token: inside a repeating cycle (see the module docstring)."""
    a = np.asarray(list(ids), dtype=np.int64)
    n = a.size
    covered = np.zeros(n, dtype=bool)
    for p in range(1, min(max_period, n // MIN_COPIES) + 1):
        eq = a[p:] == a[:-p]  # eq[i]: token i+p repeats token i, one period back
        if not eq.any():
            continue
        # Maximal runs of eq; a run of r matches starting at i spans tokens i .. i+p+r-1,
        # i.e. (r + p) / p copies of the block.
        padded = np.concatenate(([False], eq, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        for start, stop in zip(edges[::2], edges[1::2]):
            span = (stop - start) + p
            if span >= MIN_COPIES * p and span >= MIN_LOOP_TOKENS:
                covered[start : start + span] = True
    return covered


def loop_share(ids: Sequence[int], max_period: int = MAX_PERIOD) -> float:
    """Fraction of the tokens that sit in a repeating cycle; nan for an empty output."""
    mask = loop_mask(ids, max_period)
    return float(mask.mean()) if mask.size else float("nan")
