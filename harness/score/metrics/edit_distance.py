"""Token-level edit distances.

``Levenshtein.distance`` is only correct on Python lists/str: on numpy arrays or
tensors it silently compares the wrong things, so inputs are always converted
to ``list[int]`` here.

``levenshtein_trajectory`` runs the compiled ``_levtraj`` extension (built by
setup.py, optional) when it is importable, else ``levenshtein_trajectory_py``,
the pure-Python reference; ``TRAJECTORY_BACKEND`` says which ("c" / "python").
"""

from __future__ import annotations

from typing import Sequence

import Levenshtein
import numpy as np

try:
    from harness.score.metrics._levtraj import trajectory as _c_trajectory

    TRAJECTORY_BACKEND = "c"
except ImportError:  # built without a compiler (setup.py marks the extension optional)
    _c_trajectory = None
    TRAJECTORY_BACKEND = "python"


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


def levenshtein_trajectory_py(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """d(t) = Lev(A[:t], B[:t]) for t = 1..max(len): the diagonal of one DP table.

    Bit-parallel (Myers 1999, Hyyro's edit-distance form): B is the pattern, one
    bit per row; each symbol of A advances one DP column in a handful of
    big-integer operations, keeping the column's vertical deltas as two bit
    vectors (VP: +1, VN: -1). Any entry of the current column is then a masked
    popcount: D[i][j] = j + |VP & low_i| - |VN & low_i|. So the whole diagonal
    costs one pass, O(T * T/64) word operations, instead of T distance calls.
    """
    a = [int(x) for x in a]
    b = [int(x) for x in b]
    T = max(len(a), len(b))
    out = np.zeros(T, dtype=np.int64)
    # A shared prefix costs nothing and leaves every later d(t) unchanged
    # (Levenshtein distance is invariant to stripping a common prefix).
    f = 0
    for x, y in zip(a, b):
        if x != y:
            break
        f += 1
    a, b = a[f:], b[f:]
    n, m = len(a), len(b)
    if n == 0 and m == 0:
        return out
    if m == 0:
        out[f:] = np.minimum(np.arange(1, T - f + 1), n)
        return out
    full = (1 << m) - 1
    peq: dict[int, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    eqs = [peq.get(c, 0) for c in a]
    vp, vn = full, 0  # column 0: D[i][0] = i, every vertical delta +1
    low = 0
    diag: list[int] = []  # a Python list: numpy item assignment costs more than the column update
    append = diag.append
    for j, eq in enumerate(eqs, start=1):
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        hp = vn | ~(xh | vp)
        hn = vp & xh
        # Row 0 is D[0][j] = j (global alignment): the shifted-in horizontal delta is +1.
        hp = ((hp << 1) | 1) & full
        vp = ((hn << 1) | ~(xv | hp)) & full
        vn = hp & xv
        if j <= m:
            low = (low << 1) | 1
        append(j + (vp & low).bit_count() - (vn & low).bit_count())
    # Past the end of A its prefix stays whole: d(t) = Lev(A, B[:min(t, m)]).
    for t in range(n + 1, T - f + 1):
        low = (1 << min(t, m)) - 1
        append(n + (vp & low).bit_count() - (vn & low).bit_count())
    out[f:] = diag
    return out


def levenshtein_trajectory(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """d(t) = Lev(A[:t], B[:t]) for t = 1..max(len), int64: same values as ``levenshtein_trajectory_py``.

    The C pass takes only lists/tuples of Python ints within int64. Arrays and
    tensors go through ``.tolist()``; other items (floats, numpy scalars) are
    converted with ``int()`` as the reference does; ids outside int64 fall back
    to the reference, which handles any int.
    """
    if _c_trajectory is None:
        return levenshtein_trajectory_py(a, b)
    a, b = (x if isinstance(x, (list, tuple)) else x.tolist() if hasattr(x, "tolist") else list(x) for x in (a, b))
    try:
        try:
            buf = _c_trajectory(a, b)
        except TypeError:
            buf = _c_trajectory([int(x) for x in a], [int(x) for x in b])
    except OverflowError:
        return levenshtein_trajectory_py(a, b)
    return np.frombuffer(buf, dtype=np.int64)  # over a bytearray: writable, like the reference's array, no copy
