"""Pair divergences against a 40-digit brute force (mpmath), where float64 cancellation bites: near-equal rows.

For near-equal rows KL and JS are second order in the log-ratio while each term
is first order; forming log p and log q separately leaves ~1e-15 in every
log-ratio, which against true values of 1e-16..1e-22 is all noise. The
reference renormalises the exact float32 inputs in 40 digits.
"""

import math

import mpmath
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax
from scipy.stats import entropy as scipy_entropy

from harness.decode.greedy import Generation
from harness.score.metrics import divergence as dv
from harness.score.pairs import PromptEndScorer, prompt_end_scores

V = 1000


def _row(seed, v=V, scale=4.0):
    return log_softmax(np.random.default_rng(seed).normal(size=v) * scale).astype(np.float32)


def _brute(a, b):
    """(JS, KL(a||b), KL(b||a)) of the float32 rows a, b, each renormalised, in 40 significant digits."""
    with mpmath.workdps(40):
        ea = [mpmath.exp(mpmath.mpf(float(x))) if np.isfinite(x) else mpmath.mpf(0) for x in a]
        eb = [mpmath.exp(mpmath.mpf(float(x))) if np.isfinite(x) else mpmath.mpf(0) for x in b]
        sa, sb = mpmath.fsum(ea), mpmath.fsum(eb)
        p, q = [x / sa for x in ea], [x / sb for x in eb]
        m = [(x + y) / 2 for x, y in zip(p, q)]
        return float((_kl(p, m) + _kl(q, m)) / 2), float(_kl(p, q)), float(_kl(q, p))


def _kl(u, w):
    if any(x and not y for x, y in zip(u, w)):
        return mpmath.inf  # mass where the other side has none
    return mpmath.fsum(x * mpmath.log(x / y) for x, y in zip(u, w) if x)


def _near(kind):
    a = _row(2)
    b = a.copy()
    if kind == "one logit +1e-3":
        b[11] += np.float32(1e-3)  # not renormalised: the exact normaliser difference must take care of it
    elif kind == "one logit +1e-6":
        b[11] += np.float32(1e-6)
    elif kind == "every entry 1 ulp":
        b = np.nextafter(a, np.float32(0))
    elif kind == "shared mask":
        b = np.nextafter(a, np.float32(0))
        a[[3, 500]] = b[[3, 500]] = -np.inf  # tokens both sides mask out
    return a, b


@pytest.mark.parametrize("kind", ["one logit +1e-3", "one logit +1e-6", "every entry 1 ulp", "shared mask"])
def test_near_equal_rows_match_the_brute_force(kind):
    a, b = _near(kind)
    got = dv.divergences(dv.Prepared(a), dv.Prepared(b))
    ref = _brute(a, b)
    assert all(0 < r < 1e-12 for r in ref)  # second-order values, far below float64's 1e-16 relative per term
    assert got == pytest.approx(ref, rel=1e-6, abs=0)
    assert (dv.js(a, b), dv.kl(a, b), dv.kl(b, a), dv.js(b, a)) == pytest.approx(ref + ref[:1], rel=1e-6, abs=0)


def test_rows_with_different_supports_and_huge_gaps_match_the_brute_force():
    a, b = _row(4), _row(5)
    a[7] = -np.inf  # a masks a token b gives mass to: KL(b||a) = inf, JS finite
    got = dv.divergences(dv.Prepared(a), dv.Prepared(b))
    ref = _brute(a, b)
    assert math.isinf(got[2]) and ref[2] == math.inf
    assert got[:2] == pytest.approx(ref[:2], rel=1e-12)
    far = _row(6)
    far[9] = np.float32(-800.0)  # exp underflows in float64 after renormalising: the masked route
    got = dv.divergences(dv.Prepared(far), dv.Prepared(b))
    assert got == pytest.approx(_brute(far, b), rel=1e-12)


def test_different_rows_at_the_real_vocabulary_match_scipy():
    a, b = _row(2, v=151_936), _row(3, v=151_936)
    js, kab, kba = dv.divergences(dv.Prepared(a), dv.Prepared(b))
    pa, pb = np.exp(a.astype(np.float64)), np.exp(b.astype(np.float64))  # scipy renormalises them
    assert kab == pytest.approx(scipy_entropy(pa, pb), rel=1e-12)
    assert kba == pytest.approx(scipy_entropy(pb, pa), rel=1e-12)
    assert js == pytest.approx(jensenshannon(pa, pb) ** 2, rel=1e-12)
    assert (0.0, 0.0, 0.0) == dv.divergences(dv.Prepared(a), dv.Prepared(a.copy()))  # bitwise equal: exactly 0


def _gen(key, row):
    z = np.zeros(1, np.float32)
    return Generation(model="m", variant="bf16", prompt_key=key, replicate=0, rendered_text="", n_prompt_tokens=1,
                      gen_ids=(1,), gen_text="x", stop_reason="length", trace_top1_id=np.ones(1, np.int64),
                      trace_top1_logit=z + 1, trace_top2_id=np.zeros(1, np.int64), trace_top2_logit=z,
                      prompt_end_logprobs=row, hidden_means={1: np.ones(4, np.float32)})


def test_the_pair_scorer_reuses_side_a_without_mixing_rows():
    # Side A repeats (prepared once), side B goes through one scratch row: no pair may see another pair's row.
    a, c = _gen("a", _row(10)), _gen("c", _row(11))
    b1, b2, b3 = (_gen(f"b{i}", _row(20 + i)) for i in range(3))
    same = _gen("a2", a.prompt_end_logprobs.copy())
    pairs = [(a, b1), (a, b2), (c, b1), (a, b3), (a, same), (c, a)]
    fresh = [dv.divergences(dv.Prepared(x.prompt_end_logprobs), dv.Prepared(y.prompt_end_logprobs)) for x, y in pairs]
    many = PromptEndScorer().many(pairs)
    one_by_one = [prompt_end_scores(x, y) for x, y in pairs]
    assert [s[:3] for s in many] == fresh and [s[:3] for s in one_by_one] == fresh
    assert fresh[4] == (0.0, 0.0, 0.0) and all(min(f) > 0 for i, f in enumerate(fresh) if i != 4)
    assert many[5][3] == (c.prompt_end.top1_id != a.prompt_end.top1_id)
