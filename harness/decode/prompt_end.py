"""The prompt-end distribution in the compact form a run keeps: top-k log-probabilities and the tail mass.

Why compact: at a real vocabulary the full next-token log-softmax is 151,936
float32 for Qwen3 (262k for Gemma 3), about 0.6-1 MB per prompt, written once
per prompt into the run directory and again into the generation cache. The
pair divergences (JS, both KLs) need the full distributions, and every pair of
a cell is known before decoding: the cell computes them while both
distributions are still in memory (:func:`harness.score.pairs.score_pairs`),
and only this record is stored. ``--store-full-dist`` keeps the full rows too.

Everything the report reads per prompt (top-1 id and probability, margin,
entropy, effective vocabulary, non-finite entries) is exact here: the
statistics that need the whole distribution are computed from it before it
is dropped. What a compact row cannot give is a divergence to another
distribution; those are NaN where the full rows are gone (and counted).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

TOP_K = 64
"""Log-probabilities kept per prompt (the Fisher study's default k)."""


@dataclass(frozen=True, eq=False)
class PromptEnd:
    """One prompt's next-token distribution after the generation prompt, in compact form."""

    top_ids: np.ndarray = field(repr=False)
    """Token ids of the k most probable tokens (int64), by log-probability descending; among exact ties the lower
    id first, so ``top_ids[0]`` is ``argmax`` of the full row (the first index, as numpy and greedy take it)."""
    top_logprobs: np.ndarray = field(repr=False)
    """Their log-probabilities (float32, the values of the full log-softmax row)."""
    tail_mass: float
    """Probability of every token outside ``top_ids`` (a float64 sum of their probabilities; 0.0 when k >= V)."""
    vocab_size: int
    """Length of the full row."""
    entropy: float
    """nats, from the full row (float64)."""
    veff: float
    """Effective vocabulary 1 / sum p_i^2, from the full row."""
    non_finite: bool
    """The full row had a NaN or +inf entry (overflowed logits; the cell fails with failed-numerics)."""

    @property
    def top1_id(self) -> int:
        return int(self.top_ids[0]) if self.top_ids.size else -1

    @property
    def top1_prob(self) -> float:
        return float(np.exp(np.float64(self.top_logprobs[0]))) if self.top_logprobs.size else math.nan

    @property
    def margin(self) -> float:
        """Log-probability margin of the top two tokens (= their logit margin; log-softmax keeps differences)."""
        if self.top_logprobs.size < 2:
            return math.nan
        return float(np.float64(self.top_logprobs[0]) - np.float64(self.top_logprobs[1]))


def compact(logprobs: np.ndarray, k: int = TOP_K) -> PromptEnd:
    """The compact record of one full log-softmax row (float32 or float64)."""
    lp = np.asarray(logprobs)
    n = int(lp.size)
    # numpy's max propagates NaN: one pass tells a NaN or +inf entry (overflowed logits) apart.
    hi = float(np.max(lp)) if n else -math.inf
    bad = math.isnan(hi) or hi == math.inf
    k = min(int(k), n)
    safe = np.where(np.isnan(lp), -np.inf, lp) if bad else lp
    cand = _at_least_kth(safe, k) if k < n else np.arange(n)
    # Order by (-logprob, id): a total order, so exact ties resolve to the lower id, as argmax does.
    top = cand[np.lexsort((cand, -safe[cand].astype(np.float64)))[:k]].astype(np.int64)
    tail, entropy, sq = _statistics(safe, top, bad)
    veff = 1.0 / sq if sq > 0 else math.nan
    return PromptEnd(top, lp[top].astype(np.float32), tail, n, entropy, veff, bad)


def _at_least_kth(lp: np.ndarray, k: int) -> np.ndarray:
    """Ids of every entry >= the k-th largest value (all of the top k, ties at the k-th value included)."""
    n = lp.size
    # A cheap lower bound first: the k-th largest of every 16th entry is <= the row's k-th largest (those k entries
    # are in the row), so the entries at or above it hold the whole top k; about 16 k of them, so the exact
    # selection runs on ~1,000 values, not 151,936 (argpartition of the full row was the largest cost here).
    sample = lp[:: _STRIDE]
    if sample.size >= 4 * k:
        pre = np.flatnonzero(lp >= np.partition(sample, sample.size - k)[sample.size - k])
    else:
        pre = np.arange(n)
    vals = lp[pre]
    kth = np.partition(vals, vals.size - k)[vals.size - k]
    # Ties at the k-th value may leave out a lower id than one kept: keep every id at that value.
    return pre[vals >= kth]


_STRIDE = 16


def _statistics(lp: np.ndarray, top: np.ndarray, bad: bool) -> tuple[float, float, float]:
    """(tail mass outside ``top``, entropy, sum p^2) of a row without NaN, in float64.

    float64 probabilities and accumulators (exp of a float32 log-probability in float64 is exact to 1 ulp; float32
    p would carry 1e-7 relative error into every statistic). The rows live in two reused scratch arrays: fresh
    1.2 MB temporaries per prompt cost page faults (the version before reported ~15 ms per prompt from them).
    """
    n = lp.size
    x, p = _scratch(n)
    np.copyto(x, lp, casting="same_kind")  # float64 log-probabilities
    np.exp(x, out=p)
    if bad or not np.isfinite(x.min()):
        # -inf entries (masked tokens; +inf rows are already flagged): 0 * -inf must count as 0, not NaN.
        with np.errstate(invalid="ignore"):
            entropy = -float(np.sum(p * x, where=p > 0))
    else:
        entropy = -float(np.einsum("i,i->", p, x))  # numpy's own loop: no threaded BLAS (see divergence._dot)
    sq = float(np.einsum("i,i->", p, p))
    p[top] = 0.0
    tail = float(p.sum())  # the small terms themselves: no 1 - sum(top) cancellation
    return tail, entropy, sq


_LOCAL = threading.local()


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None or bufs[0].size != n:
        bufs = _LOCAL.bufs = (np.empty(n, np.float64), np.empty(n, np.float64))
    return bufs


def from_columns(top_ids, top_logprobs, tail_mass, vocab_size, entropy, veff, non_finite) -> PromptEnd:
    """Rebuild the record from a generations.parquet / cache row."""
    return PromptEnd(np.asarray(top_ids, dtype=np.int64), np.asarray(top_logprobs, dtype=np.float32), float(tail_mass),
                     int(vocab_size), float(entropy), float(veff), bool(non_finite))
