"""Prompt-end distribution metrics, computed from log-probabilities in float64.

Working from log-softmax outputs keeps tail tokens whose probabilities
underflow in float32 from turning KL into inf or nan. The pair divergences
(:func:`divergences`; :func:`kl` and :func:`js` are the same computation for one
pair) are written to stay exact for near-equal rows: see the notes above
:class:`Prepared`.
"""

from __future__ import annotations

import math
import threading

import numpy as np


def finite_distribution(lp: np.ndarray) -> bool:
    """Whether log-probabilities describe a distribution: no NaN, no +inf, some mass.

    -inf entries are legitimate (tokens a model masks out); NaN and +inf come
    from overflowed logits and must never be read as a distribution.
    """
    return _finite_max(np.asarray(lp)) is not None


def _finite_max(a: np.ndarray) -> float | None:
    # One pass: numpy's max propagates NaN, so the max alone tells NaN, +inf and
    # "all -inf" (no mass) apart from a usable row.
    if not a.size:
        return None
    mx = float(np.max(a))
    return mx if math.isfinite(mx) else None


def kl(lp: np.ndarray, lq: np.ndarray) -> float:
    """KL(p || q) in nats from log-probabilities; nan when either side is not a distribution, never negative."""
    return divergences(Prepared(lp), Prepared(lq))[1]


def js(lp: np.ndarray, lq: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats: 0.5 KL(p||m) + 0.5 KL(q||m), m = (p+q)/2; nan on non-distributions."""
    return divergences(Prepared(lp), Prepared(lq))[0]


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



# ---------------------------------------------------------------------------
# Pair divergences at a real vocabulary (V = 151,936): JS and both KLs in a
# few vectorised passes over V, exact for near-equal rows.
#
# Numerics. Let a, b be the two float32 rows, La = logsumexp(a), Lb the same,
# so log p = a - La, log q = b - Lb. Everything is written in
# delta = a - b (exact: the difference of two float32 is a float64) and the
# one constant c = La - Lb, so that log p - log q = delta - c:
#   c      = log(sum q e^delta) = log1p(sum q expm1(delta))   (sum q = 1)
#   KL(p||q) = sum p delta - c,  KL(q||p) = c - sum q delta
#   g      = log p - log m = -log1p(expm1(c - delta) / 2),  m = (p + q) / 2
#   JS     = 0.5 sum p g + 0.5 sum q (g - (delta - c)) = 0.5 sum (p + q) g + 0.5 KL(q||p)
# Why: for near-equal rows KL ~ sum p d^2 / 2 is second order in d = log p - log q,
# while each term is first order, and forming log p and log q separately (the
# previous code) left ~1e-15 of rounding in every d; against true values of
# 1e-16..1e-22 that was noise (JS off by 2x at a 1e-3 change of one logit,
# by 1e5 at 1e-6; measured against mpmath). Here d carries only its own
# relative rounding, c is formed from expm1 (no 1 + x - 1 cancellation), and
# g from expm1/log1p stays relative-accurate as d -> 0. JS is moreover
# insensitive to first order to an error in c. Accumulators are float64
# (einsum); probabilities are float64 too, since float32 p (1e-7 relative)
# would swamp second-order values. Rounding can still leave a result a few
# ulp below 0 (or JS above log 2): those are clamped, never reported.
# Cost: about 10 passes over V per pair, none of them a scalar libm loop
# (np.logaddexp was ~3 ms per pair at V = 151,936; exp/expm1/log1p are SIMD).


class Prepared:
    """One distribution made ready for :func:`divergences`: its probabilities (float64, unnormalised) and normaliser.

    A base prompt's prompt end is side A of ~23 pairs: preparing it once saves
    the passes over V each of those pairs would make.
    """

    __slots__ = ("raw", "ok", "w", "total", "log_norm", "hi", "lo")

    raw: np.ndarray
    """The row as given (float32 log-softmax from a decode); bitwise equality of two rows means divergence 0."""
    ok: bool
    """The row is a distribution (:func:`finite_distribution`); otherwise every divergence with it is nan."""
    w: np.ndarray | None
    """exp(raw - hi), float64: the probabilities are w / total (float32 ones, 1e-7 relative, would swamp
    second-order values). Not divided through: the sums that use w divide once instead (one pass less per row)."""
    total: float
    """sum(w) (>= 1: the max contributes exp(0))."""
    log_norm: float
    """logsumexp(raw) = hi + log(total): float32 log-softmax rows sum to 1 only up to float32 rounding."""
    hi: float
    """max(raw)."""
    lo: float
    """min(raw) (-inf where a token is masked). With ``hi`` it bounds every log-ratio of a pair without a pass."""

    def __init__(self, lp: np.ndarray, out: np.ndarray | None = None) -> None:
        """``out``: a float64 buffer of the row's size to hold ``w`` (scratch for a side used in one pair only)."""
        self.raw = np.asarray(lp)
        mx = _finite_max(self.raw)
        self.ok = mx is not None
        self.w, self.total, self.log_norm, self.hi, self.lo = None, math.nan, math.nan, math.nan, math.nan
        if mx is None:
            return
        w = np.empty(self.raw.size, np.float64) if out is None else out
        np.subtract(self.raw, mx, out=w, dtype=np.float64)
        np.exp(w, out=w)
        self.w, self.total = w, float(w.sum())
        self.log_norm, self.hi, self.lo = mx + math.log(self.total), mx, float(np.min(self.raw))

    @property
    def p(self) -> np.ndarray | None:
        """The probabilities (a new array)."""
        return None if self.w is None else self.w / self.total


class Workspace:
    """float64 scratch rows reused across pairs: fresh 1.2 MB temporaries per pair cost page faults."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, int], np.ndarray] = {}

    def buf(self, name: str, n: int) -> np.ndarray:
        b = self._bufs.get((name, n))
        if b is None:
            b = self._bufs[(name, n)] = np.empty(n, np.float64)
        return b


_LOCAL = threading.local()
_EXP_SAFE = 650.0
"""Bound on the rows' spans and on |delta| for the fast path: e^650 times any vocabulary size stays below float64's
1.8e308 (sum q e^delta <= V e^650), and so does expm1(c - delta) (at most 650 + log V)."""


def _workspace() -> Workspace:
    ws = getattr(_LOCAL, "ws", None)
    if ws is None:
        ws = _LOCAL.ws = Workspace()
    return ws


def divergences(a: Prepared, b: Prepared, ws: Workspace | None = None) -> tuple[float, float, float]:
    """(JS, KL(a||b), KL(b||a)) in nats; nan when a side is not a distribution, 0.0 exactly for bitwise-equal rows."""
    if not (a.ok and b.ok):
        return math.nan, math.nan, math.nan
    if a.raw.shape != b.raw.shape:
        raise ValueError(f"prompt-end rows of different sizes: {a.raw.shape} and {b.raw.shape}")
    if np.array_equal(a.raw, b.raw):
        # Bitwise-equal rows: 0 by definition (the identical rung); the formula would only add rounding.
        return 0.0, 0.0, 0.0
    ws = ws or _workspace()
    n = a.w.size
    delta = ws.buf("delta", n)
    with np.errstate(invalid="ignore"):  # -inf - -inf: a token masked on both sides (only the masked path meets it)
        np.subtract(a.raw, b.raw, out=delta, dtype=np.float64)  # float64 loop: exact for float32 rows
    # Fast path: every p, q > 0 (no row spans 650 nats: w >= e^-650 > 0) and every |delta| <= 650 (bounded by
    # the rows' ranges, no pass needed).
    if max(a.hi - a.lo, b.hi - b.lo, a.hi - b.lo, b.hi - a.lo) <= _EXP_SAFE:
        return _fast(a.w, a.total, b.w, b.total, delta, ws.buf("t", n))
    ma, mb = a.w > 0, b.w > 0
    if np.array_equal(ma, mb):
        # The same support (tokens masked on both sides, or underflowed on both): the exact path on it.
        dm = delta[ma]
        if _bounded(dm):
            return _fast(a.w[ma], a.total, b.w[ma], b.total, dm, np.empty_like(dm))
    return _masked(a, b, delta, ma, mb)


def _bounded(delta: np.ndarray) -> bool:
    return bool(delta.size) and -_EXP_SAFE <= delta.min() and delta.max() <= _EXP_SAFE


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    # float64 sum of products in numpy's own loop: np.dot goes to a multi-threaded BLAS, which on a loaded 2-core
    # machine waited up to ~8 ms for its second thread on one 0.03 ms product (p90, measured).
    return float(np.einsum("i,i->", x, y))


def _fast(wa: np.ndarray, sa: float, wb: np.ndarray, sb: float, delta: np.ndarray,
          t: np.ndarray) -> tuple[float, float, float]:
    # p = wa / sa, q = wb / sb, all > 0, and |delta| <= 650: no inf, no 0 * inf, so plain sums of products.
    c = math.log1p(_dot(wb, np.expm1(delta, out=t)) / sb)
    kab = _dot(wa, delta) / sa - c
    kba = c - _dot(wb, delta) / sb
    np.subtract(c, delta, out=t)  # log q - log p
    np.expm1(t, out=t)
    t *= 0.5
    np.log1p(t, out=t)  # -g = log(m / p)
    half_sum_g = -0.5 * (_dot(wa, t) / sa + _dot(wb, t) / sb)
    return _clamped(half_sum_g + 0.5 * kba, kab, kba)


def _masked(a: Prepared, b: Prepared, delta: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> tuple[float, float, float]:
    # Different supports (a token one side masks and the other does not) or |delta| > 650: sums over each side's
    # support. KL toward a side without mass where the other has some is +inf; JS stays finite (m = p / 2 there).
    # c here is the plain difference of the normalisers (~1e-16 absolute), which JS does not feel to first order.
    pa, pb = a.p, b.p
    with np.errstate(invalid="ignore", over="ignore"):
        d = delta - (a.log_norm - b.log_norm)  # log p - log q; nan where both are -inf
        kab = float(np.sum(pa * d, where=ma))
        kba = float(-np.sum(pb * d, where=mb))
        # g(x) = log(2 / (1 + e^-x)) written without overflow for either sign: G(|x|) + min(x, 0).
        big = -np.log1p(0.5 * np.expm1(-np.abs(d)))
        ja = float(np.sum(pa * (big + np.minimum(d, 0.0)), where=ma))
        jb = float(np.sum(pb * (big - np.maximum(d, 0.0)), where=mb))
    return _clamped(0.5 * ja + 0.5 * jb, kab, kba)


def _clamped(js_: float, kab: float, kba: float) -> tuple[float, float, float]:
    # Gibbs' inequality and 0 <= JS <= log 2 hold exactly; what falls outside is rounding of values that are
    # 0 (or log 2) to within a few ulp, not information.
    return min(max(js_, 0.0), math.log(2.0)), max(kab, 0.0), max(kba, 0.0)
