"""Run-level statistics with the base prompt as the unit: cluster bootstrap CIs, paired
permutation tests on per-prompt differences, Holm and Benjamini-Hochberg, compact letters.

Why the prompt and not the pair: every pair of one base prompt shares side A's
output (and the ladder gives a prompt 3 to 8 pairs per rung), so pairs of one
prompt are not independent. Resampling or sign-flipping pairs one by one
treats them as if they were, and at a prompt-level SD equal to the residual
SD it called a null difference "separated" 43% of the time (issue 15;
``benchmarks/bench_validity.py`` repeats that check on this code).

- Intervals: :func:`cluster_bootstrap_ci` resamples base prompts with
  ``scipy.stats.bootstrap`` (a prompt keeps all its pairs). The statistic is
  the mean over pairs of the resampled prompts (sum of their values / number
  of their pairs): the same quantity the tables print as "mean", so the
  interval is about the number next to it. It is a percentile interval at an
  *expanded* level (Hesterberg 2015): with n prompts the plain percentile
  interval is too narrow by about ``t(n-1) / z * sqrt(n / (n-1))`` (at n = 9
  it covered a normal mean ~90% of the time), so the level is raised until
  its normal quantile equals ``sqrt(n/(n-1)) * t_{n-1}`` of the asked level.
- Tests: :func:`prompt_permutation_tests` is
  ``scipy.stats.permutation_test(permutation_type='samples')`` on one sample,
  the per-prompt mean differences, which flips the sign of each prompt's
  difference (all 2**n patterns when that is at most ``PERMUTATIONS``). The
  statistic is the mean of the per-prompt means: each prompt counts once,
  which is what the sign-flip null (independent, symmetric units) is about.
- Every random draw comes from ``numpy.random.default_rng`` with a fixed seed:
  the same data always give the same intervals, p-values and clusters.
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _ss

from harness.summary.records import Comparison, PermutationResult

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261121
PERMUTATIONS = 10_000
PERMUTATION_SEED = 20261122
ALPHA = 0.05
CONFIDENCE = 0.95
MIN_CI_PROMPTS = 5
"""Fewest base prompts an interval is given for. The expanded percentile bootstrap covered a normal mean 0.76 of
the time at 3 prompts, 0.87 at 4 and 0.93 at 5 (300 simulated datasets each, 3 pairs per prompt, prompt SD twice
the pair SD); below 5 the tables print no interval rather than one that is too narrow."""
FDR_Q = 0.05
"""Benjamini-Hochberg rate of `compare`: the expected share of false calls among the cells it calls changed."""


def _as_1d(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(v).any():
        # A NaN mean would poison every resample; the caller must decide what a missing metric means.
        raise ValueError("bootstrap/permutation input contains NaN")
    return v


def _group(values: np.ndarray, prompts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt ids sorted, per-prompt sums, per-prompt pair counts)."""
    p = np.asarray(prompts).astype(str).reshape(-1)
    if p.size != values.size:
        raise ValueError(f"{values.size} values but {p.size} prompt ids")
    ids, inv = np.unique(p, return_inverse=True)
    return ids, np.bincount(inv, weights=values, minlength=ids.size), np.bincount(inv, minlength=ids.size).astype(np.float64)


def prompt_means(values: Sequence[float] | np.ndarray, prompts: Sequence[str] | np.ndarray) -> dict[str, float]:
    """Mean over each base prompt's pairs, keyed by prompt id."""
    ids, sums, counts = _group(_as_1d(values), prompts)
    return dict(zip(ids.tolist(), (sums / counts).tolist()))


def expanded_level(level: float, n_prompts: int) -> float:
    """Percentile level whose normal quantile is sqrt(n/(n-1)) * t_{n-1} of ``level`` (Hesterberg's expansion)."""
    if n_prompts < 2:
        return level
    q = np.sqrt(n_prompts / (n_prompts - 1)) * _ss.t.ppf(0.5 + level / 2.0, n_prompts - 1)
    return float(2.0 * _ss.norm.cdf(q) - 1.0)


def _ratio_interval(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """Cluster bootstrap of sum(sums[k]) / sum(counts[k]) minus the same of row 1 (when two rows), over prompts k.

    ``sums`` and ``counts`` are (rows, n prompts); one row is a mean, two rows
    the difference row 1 - row 0 with both rows resampled by the same prompts.
    """
    n = sums.shape[1]

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        k = idx.astype(np.intp)
        means = sums[:, k].sum(axis=-1) / counts[:, k].sum(axis=-1)  # (rows, resamples)
        return means[0] if means.shape[0] == 1 else means[1] - means[0]

    res = _ss.bootstrap((np.arange(n),), statistic, n_resamples=resamples, vectorized=True, method="percentile",
                        confidence_level=expanded_level(level, n), rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    prompts: Sequence[str] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> tuple[float, float]:
    """CI of the mean over pairs, resampling base prompts (each keeps all its pairs).

    (nan, nan) without data, with fewer than ``MIN_CI_PROMPTS`` prompts (too few
    for the interval to cover what it claims) or when every value is the same
    (:func:`ci_note` says which). Why not (x, x) for constant values: every resample
    then has mean x, so the bootstrap reports certainty it has not measured -- 12
    prompts whose outputs never moved cannot rule out that one prompt in 5 would
    (rule of three: up to 3/12 of prompts). The exact zeros of a deterministic
    identical rung are counted by the determinism verdict and the noise floor
    instead (harness.summary.determinism, harness.summary.floor).
    """
    v = _as_1d(values)
    if ci_note(v, prompts) is not None:
        return (float("nan"), float("nan"))
    ids, sums, counts = _group(v, prompts)
    return _ratio_interval(sums[None], counts[None], resamples, seed, level)


def ci_note(values: Sequence[float] | np.ndarray, prompts: Sequence[str] | np.ndarray) -> str | None:
    """Why :func:`cluster_bootstrap_ci` gives no interval for these values, or None when it gives one."""
    v = _as_1d(values)
    if v.size == 0:
        return "no finite value"
    k = int(np.unique(np.asarray(prompts).astype(str)).size)
    if k < MIN_CI_PROMPTS:
        return f"{k} prompt{'s' if k != 1 else ''} (< {MIN_CI_PROMPTS})"
    # Equal up to float rounding (x + 0.2 - x is not exactly 0.2): the bootstrap would print a zero-width interval.
    if float(np.ptp(v)) <= 1e-12 * max(1.0, float(np.abs(v).max())):
        return "constant values"
    return None


def cluster_bootstrap_diff_ci(
    x: Sequence[float] | np.ndarray, prompts_x: Sequence[str] | np.ndarray,
    y: Sequence[float] | np.ndarray, prompts_y: Sequence[str] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> tuple[float, float, int]:
    """CI of mean(y) - mean(x) (means over rows), resampling the base prompts both have; and that prompt count.

    x and y may be different quantities on the same prompts (e.g. drift rows
    against perturbed pairs): a resampled prompt brings its rows of both.
    Rows of prompts present on one side only are left out (the caller shows
    both counts); fewer than ``MIN_CI_PROMPTS`` shared prompts give (nan, nan).
    """
    vx, vy = _as_1d(x), _as_1d(y)
    ix, sx, cx = _group(vx, prompts_x)
    iy, sy, cy = _group(vy, prompts_y)
    shared, kx, ky = np.intersect1d(ix, iy, return_indices=True)
    if shared.size < MIN_CI_PROMPTS:
        return (float("nan"), float("nan"), int(shared.size))
    sums, counts = np.stack([sx[kx], sy[ky]]), np.stack([cx[kx], cy[ky]])
    d = sums / counts
    if np.all(d[1] - d[0] == d[1, 0] - d[0, 0]) and np.all(counts == counts[:, :1]):
        # Every prompt has the same difference and weight: every resample gives it, a width not measured (see
        # cluster_bootstrap_ci): no interval.
        return (float("nan"), float("nan"), int(shared.size))
    lo, hi = _ratio_interval(sums, counts, resamples, seed, level)
    return (lo, hi, int(shared.size))


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def prompt_permutation_tests(
    prompt_diffs: np.ndarray,
    n_permutations: int = PERMUTATIONS,
    seed: int = PERMUTATION_SEED,
) -> list[PermutationResult]:
    """Sign-flip test of mean = 0 on each row of a (tests x prompts) matrix of per-prompt mean differences.

    ``scipy.stats.permutation_test((d,), mean, permutation_type='samples')``:
    with one sample scipy flips the sign of each observation. All rows are one
    batched call and see the same sign patterns.
    """
    d = np.atleast_2d(np.asarray(prompt_diffs, dtype=np.float64))
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError("a paired test needs at least one prompt")
    if np.isnan(d).any():
        raise ValueError("bootstrap/permutation input contains NaN")
    n = d.shape[1]
    if n == 1:
        # scipy wants two observations; with one prompt the null is {d, -d}: two-sided p = min(1, 2 * 1/2) = 1.
        return [PermutationResult(float(x), 1.0, 1, 2, True) for x in d[:, 0]]
    res = _ss.permutation_test((d,), _mean, permutation_type="samples", vectorized=True, n_resamples=n_permutations,
                               alternative="two-sided", axis=-1, rng=np.random.default_rng(seed))
    exact = 2**n <= n_permutations
    n_perm = 2**n if exact else n_permutations
    stat, p = np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)
    return [PermutationResult(float(s), float(q), n, n_perm, exact) for s, q in zip(stat, p)]


def paired_prompt_test(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, prompts: Sequence[str] | np.ndarray,
    n_permutations: int = PERMUTATIONS, seed: int = PERMUTATION_SEED,
) -> PermutationResult:
    """Paired test of x - y (rows are the same pair in both) on the per-prompt means of the differences."""
    vx, vy = _as_1d(x), _as_1d(y)
    if vx.size != vy.size:
        raise ValueError(f"paired samples differ in size ({vx.size} vs {vy.size})")
    ids, sums, counts = _group(vx - vy, prompts)
    return prompt_permutation_tests((sums / counts)[None], n_permutations, seed)[0]


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


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH adjusted p-values (false discovery rate), in the input order: ``scipy.stats.false_discovery_control``."""
    p = np.asarray(pvalues, dtype=np.float64)
    return p.copy() if p.size == 0 else np.asarray(_ss.false_discovery_control(p, method="bh"), dtype=np.float64)


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


def cluster_groups(
    values: Mapping[str, Mapping[str, float]],
    prompt_of: Mapping[str, str],
    alpha: float = ALPHA,
    n_permutations: int = PERMUTATIONS,
    seed: int = PERMUTATION_SEED,
) -> tuple[dict[str, str], list[Comparison]]:
    """Letters and the pairwise tests for groups given as {group: {pair_id: value}}.

    ``prompt_of`` maps a pair id to its base prompt. Every pair of groups is
    tested on the pair ids both have, reduced to one mean difference per
    base prompt; the tests of one call form one Holm family. Groups with no
    shared pair id cannot be told apart, so they are not separated (they may
    share a letter): absence of evidence is reported as such, never as a separation.
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
        prompts = np.array([prompt_of[i] for i in shared])
        per_prompt = []
        for k in ks:
            a, b = pairs_of[k]
            d = np.array([values[a][i] - values[b][i] for i in shared])
            _, sums, counts = _group(d, prompts)
            per_prompt.append(sums / counts)
        results.update(zip(ks, prompt_permutation_tests(np.array(per_prompt), n_permutations, seed)))
    tested = [k for k in range(len(pairs_of)) if k in results]
    adj_of = dict(zip(tested, (float(p) for p in holm([results[k].pvalue for k in tested]))))
    comparisons = []
    for k, (a, b) in enumerate(pairs_of):
        shared = shared_of[k]
        # One weighting for the test, the printed difference and the letter order: each base prompt counts once.
        diff = float("nan")
        if shared:
            _, dsum, dcount = _group(np.array([values[a][i] - values[b][i] for i in shared]),
                                     np.array([prompt_of[i] for i in shared]))
            diff = float(np.mean(dsum / dcount))
        r = results.get(k)
        ci, sd = (float("nan"), float("nan")), float("nan")
        if shared:
            # The interval of the same per-prompt quantity: one value (the prompt's mean difference) per prompt.
            ids, sums, counts = _group(np.array([values[a][i] - values[b][i] for i in shared]),
                                       np.array([prompt_of[i] for i in shared]))
            per_prompt = sums / counts
            ci = cluster_bootstrap_diff_ci(np.zeros(ids.size), ids, per_prompt, ids)[:2]
            sd = float(np.std(per_prompt, ddof=1)) if per_prompt.size >= 2 else float("nan")
        comparisons.append(Comparison(a, b, len(shared), r.n_prompts if r else 0, diff, r.pvalue if r else None,
                                      adj_of.get(k), bool(k in adj_of and adj_of[k] < alpha), ci, sd))
    def prompt_weighted(v: Mapping[str, float]) -> float:
        if not v:
            return float("nan")
        _, sums, counts = _group(np.array(list(v.values()), dtype=np.float64), np.array([prompt_of[i] for i in v]))
        return float(np.mean(sums / counts))

    means = {g: prompt_weighted(v) for g, v in values.items()}
    separated = {frozenset((c.a, c.b)) for c in comparisons if c.separated}
    return compact_letter_display(means, separated), comparisons
