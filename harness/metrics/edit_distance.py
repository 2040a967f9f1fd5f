"""Token-level edit distances.

``Levenshtein.distance`` is only correct on Python lists/str: on numpy arrays or
tensors it silently compares the wrong things, so inputs are always converted
to ``list[int]`` here.
"""

from __future__ import annotations

from typing import Sequence

import Levenshtein
import numpy as np


def token_edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    return int(Levenshtein.distance([int(x) for x in a], [int(x) for x in b]))


def normalized_edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
    n = max(len(a), len(b))
    return 0.0 if n == 0 else token_edit_distance(a, b) / n


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int:
    """Smallest 1-based step t with A[t] != B[t] (a length difference counts); 0 when equal."""
    for t, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            return t
    return 0 if len(a) == len(b) else min(len(a), len(b)) + 1


def levenshtein_trajectory(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """d(t) = Lev(A[:t], B[:t]) for t = 1..max(len): the diagonal of one DP table.

    Row i of the table holds Lev(A[:i], B[:j]) for all j; d(t) is entry (t, t),
    with the shorter sequence's prefix clamped at its full length. One O(T^2)
    pass instead of T separate distance calls.
    """
    a = [int(x) for x in a]
    b = [int(x) for x in b]
    n, m = len(a), len(b)
    T = max(n, m)
    out = np.zeros(T, dtype=np.int64)
    bb = np.asarray(b, dtype=np.int64)
    k = np.arange(m + 1, dtype=np.int64)
    row = k.copy()  # row 0: Lev("", B[:j]) = j
    for i in range(1, n + 1):
        best = np.minimum(row[:-1] + (bb != a[i - 1]), row[1:] + 1)  # substitution / deletion
        # Insertions chain along the row, cur[j] = min(best[j], cur[j-1] + 1),
        # which unrolls to cur[j] = j + min_{k<=j}(best'[k] - k): a running minimum.
        row = np.minimum.accumulate(np.concatenate(([i], best)) - k) + k
        out[i - 1] = row[min(i, m)]
    # Past the end of A the prefix of A stays whole: d(t) = Lev(A, B[:min(t, m)]).
    for t in range(n + 1, T + 1):
        out[t - 1] = row[min(t, m)]
    return out
