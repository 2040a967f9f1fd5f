"""The compiled trajectory (harness/score/metrics/_levtraj.c) against the pure-Python
reference and against brute-force prefix distances from the C Levenshtein library."""

import random
import subprocess
import sys

import Levenshtein
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.score.metrics import edit_distance as ed
from harness.score.metrics.edit_distance import levenshtein_trajectory, levenshtein_trajectory_py


def brute(a, b):
    return [Levenshtein.distance(a[:t], b[:t]) for t in range(1, max(len(a), len(b)) + 1)]


def check(a, b, with_brute=True):
    c = levenshtein_trajectory(a, b)
    assert c.dtype == np.int64 and c.shape == (max(len(a), len(b)),)
    py = levenshtein_trajectory_py(a, b)
    assert c.tolist() == py.tolist(), (a, b)
    if with_brute:
        assert c.tolist() == brute(a, b), (a, b)


def test_extension_is_built():
    assert ed.TRAJECTORY_BACKEND == "c", (
        "harness.score.metrics._levtraj is not built: install gcc and the Python headers "
        "(e.g. apt-get install gcc python3-dev), then reinstall with "
        "`pip install -c constraints.txt -e '.[test]'` (or `make install`)"
    )


def _pair(rng, la, lb, draw):
    a = [draw() for _ in range(la)]
    if rng.random() < 0.5:  # related pair: shared prefix, then substitutions and indels
        b = a[: rng.randrange(la + 1)] + [draw() for _ in range(max(0, lb - la))]
        for _ in range(rng.randrange(1 + len(b) // 5 + 1)):
            op = rng.randrange(3)
            if op == 0 and b:
                b[rng.randrange(len(b))] = draw()
            elif op == 1 and b:
                del b[rng.randrange(len(b))]
            else:
                b.insert(rng.randrange(len(b) + 1), draw())
    else:
        b = [draw() for _ in range(lb)]
    return a, b


@pytest.mark.parametrize("vocab", [2, 3, 4, 30, 1000, "wide"])
def test_random_pairs_match_reference_and_brute_force(vocab):
    rng = random.Random(f"levtraj-{vocab}")  # a str seed is hashed deterministically
    if vocab == "wide":  # negative and huge ids, still within int64
        pool = [rng.choice([-1, 1]) * rng.randrange(2**40) for _ in range(50)] + [0, -1, 2**63 - 1, -(2**63)]
        draw = lambda: rng.choice(pool)  # noqa: E731
    else:
        draw = lambda: rng.randrange(vocab)  # noqa: E731
    for _ in range(60):
        la, lb = rng.randrange(0, 201), rng.randrange(0, 201)
        if rng.random() < 0.3:
            lb = la
        a, b = _pair(rng, la, lb, draw)
        check(a, b)
        check(b, a)


@pytest.mark.parametrize("L", [1, 63, 64, 65, 127, 128, 129, 191, 192, 193])
def test_lengths_at_word_boundaries(L):
    rng = random.Random(L)
    for vocab in (2, 4, 50, 10**6):
        for dl in (-2, -1, 0, 1, 2):
            lb = max(0, L + dl)
            a = [rng.randrange(vocab) for _ in range(L)]
            b = [rng.randrange(vocab) for _ in range(lb)]
            check(a, b)
            check(b, a)
            check(a, a[:-1] + [vocab])  # differs only in the last token
            check([vocab + 1] + a, a)  # one deletion in front: the prefix strip removes nothing


def test_symbol_counts_around_the_dense_threshold():
    # A pattern of m tokens uses W = ceil(m/64) words; a symbol occurring >= W times
    # gets a precomputed row, a rarer one is set bit by bit per column.
    rng = random.Random(3)
    for m in (130, 200, 300):
        W = (m + 63) // 64
        for count in (W - 1, W, W + 1):
            b = [rng.randrange(10**6) + 10 for _ in range(m)]
            for p in rng.sample(range(m), count):
                b[p] = 1
            a = [1 if rng.random() < 0.2 else rng.choice(b) for _ in range(m + rng.randrange(-20, 21))]
            check(a, b)
            check(b, a)


def test_edge_cases():
    for a, b in [([], []), ([], [1]), ([1], []), ([], [1, 2, 3]), ([5, 6, 7], []), ([1], [1]), ([1], [2]),
                 ([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [1, 2]), ([1, 2], [1, 2, 3, 4, 5]), ([4] * 70, [4] * 130),
                 (list(range(100)), list(range(1, 101)))]:
        check(a, b)
    assert levenshtein_trajectory([], []).tolist() == []
    assert levenshtein_trajectory(list(range(300)), list(range(300))).tolist() == [0] * 300


@pytest.mark.parametrize("T,vocab", [(1000, 3), (1500, 1000), (3000, 50)])
def test_long_inputs(T, vocab):
    rng = random.Random(T)
    a, b = _pair(rng, T, T - rng.randrange(20), lambda: rng.randrange(vocab))
    check(a, b, with_brute=T <= 1500)
    check(b, a, with_brute=False)


def test_long_all_distinct_pattern():
    a = list(range(5000))
    b = list(range(5000, 0, -1))
    check(a, b, with_brute=False)


def test_ids_outside_int64_fall_back_to_the_reference():
    a, b = [2**70, 1, 2], [1, 2, 2**70]
    assert levenshtein_trajectory(a, b).tolist() == levenshtein_trajectory_py(a, b).tolist() == brute(a, b)


ids = st.lists(st.integers(-3, 3), max_size=150) | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=150)


@settings(max_examples=300, deadline=None)
@given(ids, ids, st.integers(0, 150))
def test_property_c_equals_python(a, b, shared):
    b = a[:shared] + b  # often a common prefix, as for perturbed generations
    assert levenshtein_trajectory(a, b).tolist() == levenshtein_trajectory_py(a, b).tolist()
    assert levenshtein_trajectory(b, a).tolist() == levenshtein_trajectory_py(b, a).tolist()


def test_numpy_tuple_and_other_inputs_agree():
    rng = random.Random(11)
    a = [rng.randrange(20) for _ in range(150)]
    b = [rng.randrange(20) for _ in range(140)]
    want = levenshtein_trajectory_py(a, b).tolist()
    for x, y in [(np.array(a), np.array(b)), (tuple(a), tuple(b)), (np.array(a, dtype=np.int32), b),
                 ([np.int64(v) for v in a], b), (iter(a), (v for v in b)), (np.array(a, dtype=np.float64), b)]:
        got = levenshtein_trajectory(x, y)
        assert got.dtype == np.int64 and got.tolist() == want
    out = levenshtein_trajectory(a, b)
    out[0] = 99  # writable, like the reference's array


def test_python_fallback_when_the_extension_is_missing():
    code = (
        "import sys; sys.modules['harness.score.metrics._levtraj'] = None\n"  # makes the import raise ImportError
        "from harness.score.metrics import edit_distance as ed\n"
        "assert ed.TRAJECTORY_BACKEND == 'python', ed.TRAJECTORY_BACKEND\n"
        "print(ed.levenshtein_trajectory([1, 2, 3], [1, 5, 3, 4]).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[0, 1, 1, 2]"
