"""Prompt-end distribution metrics, computed from log-probabilities in float64.

Working from log-softmax outputs keeps tail tokens whose probabilities
underflow in float32 from turning KL into inf or nan.
"""

from __future__ import annotations

import numpy as np


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    # Bitwise-equal inputs: the divergence is 0 by definition; evaluating the
    # formula would only add rounding (log(exp(x)) != x in floating point).
    return a.shape == b.shape and bool(np.array_equal(a, b))


def kl(lp: np.ndarray, lq: np.ndarray) -> float:
    """KL(p || q) in nats from log-probabilities."""
    if _same(lp, lq):
        return 0.0
    lp = np.asarray(lp, dtype=np.float64)
    lq = np.asarray(lq, dtype=np.float64)
    p = np.exp(lp)
    mask = p > 0
    return float(np.sum(p[mask] * (lp[mask] - lq[mask])))


def js(lp: np.ndarray, lq: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats: 0.5 KL(p||m) + 0.5 KL(q||m), m = (p+q)/2."""
    if _same(lp, lq):
        return 0.0
    lp = np.asarray(lp, dtype=np.float64)
    lq = np.asarray(lq, dtype=np.float64)
    # log m = log((p + q) / 2); logaddexp is the two-term logsumexp, elementwise.
    lm = np.logaddexp(lp, lq) - np.log(2.0)
    return max(0.0, 0.5 * kl(lp, lm) + 0.5 * kl(lq, lm))


def top1_prob(lp: np.ndarray) -> float:
    return float(np.exp(np.max(lp.astype(np.float64))))


def entropy(lp: np.ndarray) -> float:
    lp = np.asarray(lp, dtype=np.float64)
    p = np.exp(lp)
    mask = p > 0
    return float(-np.sum(p[mask] * lp[mask]))


def effective_vocab(lp: np.ndarray) -> float:
    """V_eff = 1 / sum p_i^2."""
    p = np.exp(np.asarray(lp, dtype=np.float64))
    return float(1.0 / np.sum(p * p))


def logprob_margin(lp: np.ndarray) -> float:
    """z(1) - z(2); log-softmax preserves logit differences exactly."""
    top2 = np.partition(np.asarray(lp, dtype=np.float64), -2)[-2:]
    return float(top2[1] - top2[0])


def top1_flip(lp: np.ndarray, lq: np.ndarray) -> bool:
    return int(np.argmax(lp)) != int(np.argmax(lq))
