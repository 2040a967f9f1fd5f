"""One pair at one length as the pair metrics see it (harness.score.pair_metrics).

:func:`harness.score.pairs.score_pairs` does the work that spans a whole cell
(decoding ids to text once, embedding only the texts that are compared with
another, the prompt-end divergences with side A prepared once, the Levenshtein
trajectory once per pair for every length) and hands each metric a
:class:`PairView`: both sides, the length, and the intermediates several
metrics share (first divergence, margins at it, correctness), each computed
at most once per view.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from harness.decode.greedy import Generation
from harness.ladder.records import PromptPair
from harness.score.answers import correctness
from harness.score.metrics.edit_distance import first_divergence
from harness.score.records import PairSides, ScoredSide, TwinSteps
from harness.score.twin import SUMMARY_KEYS, summarize
from harness.stability.traces import first_divergence_margin_percentile

TRIVIAL_SHIFT = 2
"""A single inserted or deleted token keeps d(t) <= 2: the trajectory's reference line."""
NO_ANSWER_STATUS = "unclosed"
"""A scaffold that never closed leaves nothing known to be the answer (harness.score.scaffold)."""

PromptEndScores = tuple[float, float, float, bool, float, float, float, float]
"""(JS, KL(a||b), KL(b||a), top-1 flip, top-1 prob a, b, margin a, b)."""


def cosine_distance(u: np.ndarray, v: np.ndarray) -> float:
    # The same vector is at distance 0 by definition; 1 - u.u for a unit
    # vector is only 0 up to one ulp, and the noise floor must be exactly 0.
    if u.shape == v.shape and np.array_equal(u, v):
        return 0.0
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    nu, nv = np.linalg.norm(u64), np.linalg.norm(v64)
    if nu == 0.0 or nv == 0.0:
        return float("nan")
    return float(1.0 - np.dot(u64, v64) / (nu * nv))


class PairView:
    """Both sides of one pair, truncated to length L, with what the cell-level pass already computed.

    ``emb``: the embedding distance of two text indices (-1: no answer span, NaN); ``span_text``: a side's
    decoded answer span, or None when it has none. Text indices ``text_a``/``text_b`` are the raw outputs',
    ``answer_text_a``/``answer_text_b`` the answer spans' (-1 when ``answer_missing``).
    """

    def __init__(self, sides: PairSides, length: int, traj: np.ndarray, prompt_end: PromptEndScores,
                 texts: tuple[int, int, int, int], emb: Callable[[int, int], float],
                 span_text: Callable[[ScoredSide, tuple[int, ...]], str | None],
                 twin: tuple[TwinSteps | None, TwinSteps | None] = (None, None)) -> None:
        self.sides = sides
        self._twin = twin
        """The twin divergence per step, (side A's output, side B's output); None where it was not computed."""
        self.L = length
        self.traj = traj
        """The Levenshtein trajectory d(t) = Lev(A[:t], B[:t]) for t <= L (harness.score.metrics.edit_distance)."""
        self.prompt_end = prompt_end
        self.text_a, self.text_b, self.answer_text_a, self.answer_text_b = texts
        self._emb = emb
        self._span_text = span_text
        self.ids_a = self.ga.gen_ids[:length]
        self.ids_b = self.gb.gen_ids[:length]
        self.answer_ids_a = sides.a.answer_ids(length)
        self.answer_ids_b = sides.b.answer_ids(length)

    @property
    def pair(self) -> PromptPair:
        return self.sides.pair

    @property
    def ga(self) -> Generation:
        return self.sides.a.gen

    @property
    def gb(self) -> Generation:
        return self.sides.b.gen

    @property
    def answer_missing(self) -> bool:
        return self.answer_text_a < 0

    def emb_dist(self, answer: bool = False) -> float:
        return self._emb(self.answer_text_a, self.answer_text_b) if answer else self._emb(self.text_a, self.text_b)

    @cached_property
    def first_div(self) -> int:
        return first_divergence(self.ids_a, self.ids_b)

    @cached_property
    def margins(self) -> tuple[float, float, float, float, float]:
        """(min margin a, min margin b, margin a and b at the first divergence, its percentile within a's)."""
        L, fd = self.L, self.first_div
        ma, mb = self.ga.trace_margin[:L], self.gb.trace_margin[:L]
        min_a = float(ma.min()) if ma.size else float("nan")
        min_b = float(mb.min()) if mb.size else float("nan")
        if fd == 0 or fd > L:
            return min_a, min_b, float("nan"), float("nan"), float("nan")
        # Step fd (1-based) was chosen by trace entry fd-1 on both sides.
        da = float(ma[fd - 1]) if fd - 1 < ma.size else float("nan")
        db = float(mb[fd - 1]) if fd - 1 < mb.size else float("nan")
        return min_a, min_b, da, db, first_divergence_margin_percentile(ma, fd)

    def at_first_div(self, trace: np.ndarray) -> float:
        """A side's trace value at the first-divergence step; NaN when the prefixes agree or it is not recorded."""
        fd = self.first_div
        if fd == 0 or fd > self.L or fd - 1 >= len(trace):
            return float("nan")
        return float(trace[fd - 1])

    @cached_property
    def _twin_at_L(self) -> dict[str, dict[str, float]]:
        nan = dict.fromkeys(SUMMARY_KEYS, float("nan"))
        return {d: (nan if t is None else summarize(t, self.L)) for d, t in zip(("ab", "ba"), self._twin)}

    def twin(self, direction: str, key: str) -> float:
        """A twin-divergence summary (harness.score.twin.summarize) over the first L steps; NaN when not computed."""
        return self._twin_at_L[direction][key]

    def _correct(self, side: str) -> float:
        s = self.sides.a if side == "a" else self.sides.b
        if (self.pair.answer_a if side == "a" else self.pair.answer_b) is None:
            return float("nan")
        ids = self.answer_ids_a if side == "a" else self.answer_ids_b
        return correctness(self._span_text(s, ids), self.pair.expected(side))

    @cached_property
    def correct_a(self) -> float:
        return self._correct("a")

    @cached_property
    def correct_b(self) -> float:
        return self._correct("b")
