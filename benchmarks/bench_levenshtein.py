"""Levenshtein trajectory at T = 512: one DP pass versus T separate distance calls (target >= 10x).

Routes, on the same pairs of ``list[int]``:

- harness: ``harness.score.metrics.edit_distance.levenshtein_trajectory(a, b)`` (the
  compiled ``_levtraj`` pass; the backend in use is printed, and the
  pure-Python fallback is timed beside it for machines built without a compiler);
- baseline: ``[Levenshtein.distance(a[:t], b[:t]) for t in 1..T]`` (the C library, lists prepared once).

Inputs (seeded, vocabulary 1,000): a pair that shares its first 64 tokens and
then diverges (what a perturbed greedy output looks like), a pair with 10%
substitutions and a few insertions/deletions, and two unrelated lists. The
figure is the total time over the three pairs, median of several repetitions.
Both routes must give identical trajectories.
"""

from __future__ import annotations

import random

import numpy as np

from benchmarks.common import Outcome, Row, at_least, fmt_s, median_time

T = 512
VOCAB = 1000
TARGET = 10.0


def make_pairs(T: int = T, seed: int = 0) -> dict[str, tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    tok = lambda: rng.randrange(VOCAB)  # noqa: E731
    a = [tok() for _ in range(T)]
    diverged = a[:64] + [tok() for _ in range(T - 64)]
    noisy = list(a)
    for _ in range(T // 10):
        noisy[rng.randrange(T)] = tok()
    for _ in range(4):
        del noisy[rng.randrange(len(noisy))]
        noisy.insert(rng.randrange(len(noisy)), tok())
    unrelated = [tok() for _ in range(T)]
    return {"shared_prefix_then_diverged": (a, diverged), "substitutions_indels": (a, noisy), "unrelated": (a, unrelated)}


def run(quick: bool = False) -> Outcome:
    import Levenshtein

    from harness.score.metrics.edit_distance import (
        TRAJECTORY_BACKEND,
        levenshtein_trajectory,
        levenshtein_trajectory_py,
        token_edit_distance,
    )

    pairs = make_pairs()
    reps = 3 if quick else 9

    def harness_route():
        return [levenshtein_trajectory(a, b) for a, b in pairs.values()]

    def baseline_route():
        return [[Levenshtein.distance(a[:t], b[:t]) for t in range(1, T + 1)] for a, b in pairs.values()]

    def wrapper_route():  # the harness's own per-call wrapper (converts to list[int] on every call)
        return [[token_edit_distance(a[:t], b[:t]) for t in range(1, T + 1)] for a, b in pairs.values()]

    t_h, times_h, traj = median_time(harness_route, reps)
    t_b, times_b, base = median_time(baseline_route, reps)
    t_w, _, _ = median_time(wrapper_route, max(1, reps // 3))
    t_py, _, traj_py = median_time(lambda: [levenshtein_trajectory_py(a, b) for a, b in pairs.values()], reps)
    equal = [bool(np.array_equal(np.asarray(x), np.asarray(y)) and np.array_equal(np.asarray(p), np.asarray(y)))
             for x, p, y in zip(traj, traj_py, base)]
    ratio = t_b / t_h
    n = len(pairs)
    row = at_least(
        "levenshtein",
        f"DP pass {fmt_s(t_h / n)} vs {T} calls {fmt_s(t_b / n)} per pair (T={T})",
        ratio, TARGET,
    )
    row.info.append(
        f"levenshtein: per DP column {fmt_s(t_h / n / T)} ({TRAJECTORY_BACKEND} backend, {T} columns per pair) vs per "
        f"Levenshtein.distance call {fmt_s(t_b / n / T)} (C, bit-parallel); against the harness's token_edit_distance wrapper per prefix "
        f"({fmt_s(t_w / n)} per pair) the ratio is {t_w / t_h:.1f}x; the pure-Python fallback takes "
        f"{fmt_s(t_py / n)} per pair ({t_b / t_py:.1f}x against the {T} calls)"
    )
    eq_row = Row("levenshtein/equal", f"{sum(equal)}/{n} trajectories (C and Python) identical to the {T} calls",
                 "identical", None, "-", all(equal))
    figures = {
        "T": T, "pairs": list(pairs), "harness_s_median": t_h, "harness_s_all": times_h,
        "baseline_s_median": t_b, "baseline_s_all": times_b, "token_edit_distance_wrapper_s": t_w,
        "backend": TRAJECTORY_BACKEND, "python_fallback_s_median": t_py, "ratio_python_fallback": t_b / t_py,
        "ratio": ratio, "ratio_vs_wrapper": t_w / t_h, "equal": equal,
    }
    return Outcome([row, eq_row], figures)
