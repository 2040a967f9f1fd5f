"""Run-level statistics: bootstrap CIs, paired permutation tests, Holm, compact letter display.

Every random draw comes from a ``numpy.random.default_rng`` seeded with a
fixed constant, so the same data always give the same intervals, p-values and
clusters (a rebuilt report is identical to the original).

The bootstrap draws its resample indices exactly as ``scipy.stats.bootstrap``
does (one ``integers(0, n, (B, n))`` call per sample, in order) and takes the
same linear-interpolation percentiles, so with the same seed the percentile
interval equals scipy's; it is reimplemented only to skip scipy's
per-call validation overhead on hundreds of small cells and to give the
degenerate cases (empty, one value, constant) a defined answer instead of a
warning. ``tests/test_stats.py`` holds both to scipy.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261121
PERMUTATIONS = 10_000
PERMUTATION_SEED = 20261122
ALPHA = 0.05
CONFIDENCE = 0.95

# scipy's tolerance for "as extreme as observed": null statistics that equal
# the observed one up to rounding (sums taken in another order) must count.
_REL_TOL = np.finfo(np.float64).eps * 100


def _as_1d(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(v).any():
        # A NaN mean would poison every resample; the caller must decide what a missing metric means.
        raise ValueError("bootstrap/permutation input contains NaN")
    return v


def _percentile_interval(dist: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(dist, [alpha, 1.0 - alpha])  # 'linear', as scipy.stats.quantile's default
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) for no data, (x, x) for one or constant values."""
    v = _as_1d(values)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if v.size == 1 or np.all(v == v[0]):
        return (float(v[0]), float(v[0]))  # every resample has this mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    return _percentile_interval(means, level)


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    paired: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> tuple[float, float]:
    """CI of mean(b) - mean(a).

    Paired: ``a[i]`` and ``b[i]`` are the same pair, so pairs are resampled
    together (the bootstrap of the per-pair differences). Unpaired: each
    sample is resampled on its own, ``a`` first, as scipy does with
    ``paired=False``.
    """
    va, vb = _as_1d(a), _as_1d(b)
    if paired:
        if va.size != vb.size:
            raise ValueError(f"paired samples differ in size ({va.size} vs {vb.size})")
        return bootstrap_ci(vb - va, resamples, seed, level)
    if va.size == 0 or vb.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    ma = va[rng.integers(0, va.size, size=(resamples, va.size))].mean(axis=1)
    mb = vb[rng.integers(0, vb.size, size=(resamples, vb.size))].mean(axis=1)
    return _percentile_interval(mb - ma, level)


@dataclass(frozen=True)
class PermutationResult:
    statistic: float
    """Observed mean of x - y."""
    pvalue: float
    """Two-sided: min(1, 2 * min(P(T <= t), P(T >= t))), scipy's convention."""
    n_permutations: int
    """Sign patterns evaluated (2**n when exact)."""
    exact: bool
    """True when every sign pattern was enumerated."""


@functools.lru_cache(maxsize=8)
def _sign_patterns(n: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Sign patterns as a read-only int8 matrix (+1/-1), and whether they are all 2**n of them.

    Cached: every test on n pairs with the same seed draws the same patterns
    anyway, and a panel runs hundreds of tests per cell size (drawing them is
    most of the cost). int8 keeps a 10,000 x n cache small.
    """
    if 2**n <= n_permutations:
        # All 2**n sign patterns: the exact null distribution, no Monte-Carlo error.
        signs, exact = np.array(list(itertools.product((1, -1), repeat=n)), dtype=np.int8), True
    else:
        bits = np.random.default_rng(seed).integers(0, 2, size=(n_permutations, n), dtype=np.int8)
        signs, exact = (1 - 2 * bits).astype(np.int8), False
    signs.flags.writeable = False
    return signs, exact


def paired_permutation_test(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    n_permutations: int = PERMUTATIONS,
    seed: int = PERMUTATION_SEED,
) -> PermutationResult:
    """Paired sign-flip permutation test of mean(x - y) = 0.

    Swapping x[i] and y[i] flips the sign of d[i] = x[i] - y[i]; this is
    ``scipy.stats.permutation_test(..., permutation_type='samples')`` with the
    statistic mean(x - y). Exact when 2**n <= n_permutations; otherwise
    ``n_permutations`` random patterns and scipy's +1 correction (the observed
    pattern counts as one of the null draws, so p is never 0).
    """
    vx, vy = _as_1d(x), _as_1d(y)
    if vx.size != vy.size:
        raise ValueError(f"paired samples differ in size ({vx.size} vs {vy.size})")
    return paired_permutation_tests((vx - vy)[:, None], n_permutations, seed)[0]


def paired_permutation_tests(
    diffs: np.ndarray,
    n_permutations: int = PERMUTATIONS,
    seed: int = PERMUTATION_SEED,
) -> list[PermutationResult]:
    """:func:`paired_permutation_test` on each column of an (n pairs x k tests) matrix of differences.

    Every column sees the same sign patterns (as separate calls with one seed
    would), so a whole cell of a panel is one matrix product instead of k.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError("paired permutation test needs at least one pair")
    if np.isnan(d).any():
        raise ValueError("bootstrap/permutation input contains NaN")
    n = d.shape[0]
    observed = d.mean(axis=0)
    signs, exact = _sign_patterns(n, n_permutations, seed)
    null = signs.astype(np.float64) @ d / n  # (patterns, k)
    gamma = np.abs(observed) * _REL_TOL
    adjustment = 0 if exact else 1
    total = null.shape[0] + adjustment
    p_less = (np.count_nonzero(null <= observed + gamma, axis=0) + adjustment) / total
    p_greater = (np.count_nonzero(null >= observed - gamma, axis=0) + adjustment) / total
    p = np.minimum(1.0, 2.0 * np.minimum(p_less, p_greater))
    return [PermutationResult(float(o), float(q), int(null.shape[0]), exact) for o, q in zip(observed, p)]


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    # Step-down: an adjusted p-value is never below the one before it.
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted_sorted
    return out


_SINGLE_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _letter(i: int) -> str:
    """a..z, A..Z, then [53], [54], ...: every name stays unambiguous inside a concatenated string."""
    return _SINGLE_LETTERS[i] if i < len(_SINGLE_LETTERS) else f"[{i + 1}]"


def split_letters(letters: str) -> list[str]:
    """Inverse of concatenating letter names: 'ab[53]' -> ['a', 'b', '[53]']."""
    return re.findall(r"\[\d+\]|.", letters)


def letter_index(name: str) -> int:
    """Position of a letter name in the display order (0 for 'a')."""
    return _SINGLE_LETTERS.index(name) if len(name) == 1 else int(name[1:-1]) - 1


def compact_letter_display(
    means: Mapping[str, float],
    separated: set[frozenset[str]],
) -> dict[str, str]:
    """Letters per group: two groups share a letter iff they are *not* separated.

    Insert-and-absorb (Piepho 2004): start with one letter holding every
    group; for each separated pair, split every letter holding both into one
    without each; drop letters contained in another. Letters are then named
    in order of their lowest member mean, so "a" is the cluster with the
    smallest distance (the most stable models).
    """
    # NaN means (a group without values) sort last instead of breaking the sort.
    groups = sorted(means, key=lambda g: (bool(np.isnan(means[g])), 0.0 if np.isnan(means[g]) else means[g], g))
    letters: list[frozenset[str]] = [frozenset(groups)] if groups else []
    for pair in sorted(separated, key=lambda s: sorted(s)):
        i, j = sorted(pair)
        if i not in means or j not in means:
            continue
        split: list[frozenset[str]] = []
        for L in letters:
            if i in L and j in L:
                split += [L - {i}, L - {j}]
            else:
                split.append(L)
        letters = [L for k, L in enumerate(split)
                   if L and not any(L < M or (L == M and n < k) for n, M in enumerate(split))]
    rank = {g: k for k, g in enumerate(groups)}
    letters.sort(key=lambda L: sorted(rank[g] for g in L))
    out = {g: "" for g in groups}
    for k, L in enumerate(letters):
        for g in L:
            out[g] += _letter(k)
    return out


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    n_shared: int
    """Pair ids both groups were scored on; the test uses only these."""
    mean_diff: float
    """mean(a - b) over the shared pairs."""
    pvalue: float | None
    """None when no pair is shared (nothing to test)."""
    pvalue_holm: float | None
    separated: bool


def cluster_groups(
    values: Mapping[str, Mapping[str, float]],
    alpha: float = ALPHA,
    n_permutations: int = PERMUTATIONS,
    seed: int = PERMUTATION_SEED,
) -> tuple[dict[str, str], list[Comparison]]:
    """Letters and the pairwise tests for groups given as {group: {pair_id: value}}.

    Every pair of groups is tested on the pair ids both have; the tests of one
    call form one Holm family. Groups with no shared pair id cannot be told
    apart, so they are not separated (they may share a letter): absence of
    evidence is reported as such in the comparisons, never as a separation.
    """
    names = sorted(values)
    pairs_of = list(itertools.combinations(names, 2))
    shared_of = [tuple(sorted(set(values[a]) & set(values[b]))) for a, b in pairs_of]
    results: dict[int, PermutationResult] = {}
    # Comparisons on the same shared pair ids (usually all of them) are one batched test.
    by_shared: dict[tuple[str, ...], list[int]] = {}
    for k, shared in enumerate(shared_of):
        if shared:
            by_shared.setdefault(shared, []).append(k)
    for shared, ks in by_shared.items():
        diffs = np.array([[values[pairs_of[k][0]][i] - values[pairs_of[k][1]][i] for k in ks] for i in shared])
        results.update(zip(ks, paired_permutation_tests(diffs, n_permutations, seed)))
    raw: list[tuple[str, str, int, float, float | None]] = [
        (a, b, len(shared_of[k]), results[k].statistic if k in results else float("nan"),
         results[k].pvalue if k in results else None)
        for k, (a, b) in enumerate(pairs_of)
    ]
    tested = [k for k, r in enumerate(raw) if r[4] is not None]
    adjusted = holm([raw[k][4] for k in tested])
    adj_of = {k: float(p) for k, p in zip(tested, adjusted)}
    comparisons = [
        Comparison(a, b, n, diff, p, adj_of.get(k), bool(k in adj_of and adj_of[k] < alpha))
        for k, (a, b, n, diff, p) in enumerate(raw)
    ]
    means = {g: float(np.mean(list(v.values()))) if v else float("nan") for g, v in values.items()}
    separated = {frozenset((c.a, c.b)) for c in comparisons if c.separated}
    return compact_letter_display(means, separated), comparisons
