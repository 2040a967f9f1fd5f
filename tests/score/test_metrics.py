"""Metric functions against independent references (scipy, brute-force loops)."""

import random

import Levenshtein
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax
from scipy.stats import entropy as scipy_entropy

from harness.score.metrics import divergence as dv
from harness.score.metrics.edit_distance import (
    first_divergence,
    levenshtein_trajectory,
    normalized_edit_distance,
    token_edit_distance,
)
from harness.score.pairs import cosine_distance


def _lp(rng, n=50, scale=3.0):
    return log_softmax(rng.normal(size=n) * scale).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_kl_and_js_match_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = _lp(rng), _lp(rng)
    pa, pb = np.exp(a.astype(np.float64)), np.exp(b.astype(np.float64))
    assert dv.kl(a, b) == pytest.approx(scipy_entropy(pa, pb), rel=1e-6)  # scipy renormalizes the float32 inputs
    assert dv.kl(b, a) == pytest.approx(scipy_entropy(pb, pa), rel=1e-6)  # scipy renormalizes the float32 inputs
    # scipy returns the JS *distance* (sqrt of the divergence), natural log by default.
    assert dv.js(a, b) == pytest.approx(jensenshannon(pa, pb) ** 2, rel=1e-7)


def test_divergences_survive_underflowing_tails():
    z = np.array([0.0, -200.0, -400.0, -800.0])  # exp underflows to 0 in float32
    a = log_softmax(z).astype(np.float32)
    b = log_softmax(z[::-1]).astype(np.float32)
    for val in (dv.kl(a, b), dv.kl(b, a), dv.js(a, b)):
        assert np.isfinite(val) and val > 0


def test_identical_distributions_are_exactly_zero():
    a = _lp(np.random.default_rng(1))
    assert dv.js(a, a.copy()) == 0.0 and dv.kl(a, a.copy()) == 0.0
    assert not dv.top1_flip(a, a.copy())


def test_prompt_end_summaries():
    z = np.array([2.0, 1.0, 0.0, -1.0])
    lp = log_softmax(z)
    p = np.exp(lp)
    assert dv.top1_prob(lp) == pytest.approx(p[0])
    assert dv.logprob_margin(lp) == pytest.approx(1.0)
    assert dv.entropy(lp) == pytest.approx(scipy_entropy(p))
    assert dv.effective_vocab(lp) == pytest.approx(1 / np.sum(p**2))
    assert dv.effective_vocab(log_softmax(np.zeros(8))) == pytest.approx(8.0)
    assert dv.top1_flip(lp, log_softmax(z[::-1]))


def test_trajectory_is_the_brute_force_prefix_distance():
    rng = random.Random(0)
    for _ in range(400):
        a = [rng.randrange(5) for _ in range(rng.randrange(0, 15))]
        b = [rng.randrange(5) for _ in range(rng.randrange(0, 15))]
        T = max(len(a), len(b))
        brute = [Levenshtein.distance(a[:t], b[:t]) for t in range(1, T + 1)]
        assert levenshtein_trajectory(a, b).tolist() == brute


def test_single_insertion_stays_under_the_trivial_shift_line():
    a = list(range(100))
    b = a[:40] + [999] + a[40:]
    traj = levenshtein_trajectory(a, b)
    assert traj.max() <= 2 and traj[39] == 0 and traj[40] >= 1


def test_edit_distance_on_lists_numpy_and_normalization():
    a, b = np.array([1, 2, 3, 4]), np.array([1, 3, 4])
    assert token_edit_distance(a, b) == 1  # numpy input is converted, not mis-compared
    assert normalized_edit_distance([1, 2, 3, 4], [1, 3, 4]) == pytest.approx(0.25)
    assert normalized_edit_distance([], []) == 0.0


def test_first_divergence_is_one_based_and_zero_when_equal():
    assert first_divergence([1, 2, 3], [1, 2, 3]) == 0
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 2
    assert first_divergence([1, 2], [1, 2, 3]) == 3
    assert first_divergence([], [5]) == 1


def test_cosine_distance_on_known_vectors():
    assert cosine_distance(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert cosine_distance(np.array([1.0, 1.0]), np.array([-1.0, -1.0])) == pytest.approx(2.0)
    assert cosine_distance(np.array([3.0, 4.0]), np.array([6.0, 8.0])) == pytest.approx(0.0, abs=1e-15)
    v = np.random.default_rng(0).normal(size=384).astype(np.float32)
    assert cosine_distance(v, v.copy()) == 0.0
