"""Per-pair scores: one row per pair x model x variant x length, one column per registered metric
(harness.score.pair_metrics)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.audit.records import AuditRow
from harness.decode.greedy import Generation
from harness.decode.table import generation_from_row
from harness.ladder.records import PromptPair
from harness.score import registry
from harness.score.metrics import divergence as dv
from harness.score.metrics.edit_distance import levenshtein_trajectory
from harness.score.pair_view import (  # noqa: F401 - TRIVIAL_SHIFT and cosine_distance: read here by the report and tests
    NO_ANSWER_STATUS,
    TRIVIAL_SHIFT,
    PairView,
    PromptEndScores,
    cosine_distance,
)
from harness.score.records import PairSides, ScoredSide, TwinSteps
from harness.score.registry import PairScore
from harness.score.scaffold import answer_start_token


def divergence_columns() -> tuple[str, ...]:
    """Columns that must be exactly 0 on the identical rung of a deterministic run (the registry's)."""
    return registry.determinism_columns()


def answer_columns() -> tuple[str, ...]:
    """Columns missing by construction where a side has no answer span (answer_missing)."""
    return registry.answer_span_columns()


def pairs_frame(rows: Sequence) -> pd.DataFrame:
    """pairs.parquet from PairScore rows: the registry's columns, in order (types as the metrics return them)."""
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=registry.pair_columns())


def score_pairs(
    sides: Sequence[PairSides],
    lengths: Sequence[int],
    decode_text: Callable[[tuple[int, ...]], str],
    embed: Callable[[list[str]], np.ndarray],
    twin: Mapping[tuple[str, str], TwinSteps] | None = None,
) -> tuple[list[PairScore], list[str]]:
    """Scores for every pair and length, and the distinct texts that were embedded (only those compared with another).

    ``twin``: (pair id, 'ab' or 'ba') -> the pair's twin divergence per step (harness.run.twin); None or a missing
    entry leaves the twin columns NaN."""
    twin = twin or {}
    texts: dict[str, int] = {}
    decoded: dict[tuple[int, ...], str] = {}

    def text_index(ids: tuple[int, ...]) -> int:
        # A base prompt's output sits in ~20 pairs x lengths x (raw, answer): decode it once.
        t = decoded.get(ids)
        if t is None:
            t = decoded[ids] = decode_text(ids)
        if t not in texts:
            texts[t] = len(texts)
        return texts[t]

    Lmax = max(lengths)
    plan = []
    for s in sides:
        ga, gb = s.a.gen, s.b.gen
        traj = levenshtein_trajectory(ga.gen_ids[:Lmax], gb.gen_ids[:Lmax])  # prefix-consistent: one pass for all L
        # An unclosed scaffold has no answer span: scoring two empty spans would
        # report "identical answers" (distance 0) for outputs that never answered.
        missing = NO_ANSWER_STATUS in (s.a.scaffold, s.b.scaffold)
        for L in lengths:
            aa, ab = s.a.answer_ids(L), s.b.answer_ids(L)
            xa, xb = (-1, -1) if missing else (text_index(aa), text_index(ab))
            plan.append((s, L, traj[:L], text_index(ga.gen_ids[:L]), text_index(gb.gen_ids[:L]), xa, xb))
    # Only texts compared with a *different* text need an embedding: a text met
    # only by itself is at distance 0 by definition (identical rung, unchanged
    # outputs), so embedding it would be wasted work.
    needed_set: set[int] = set()
    for *_, ta, tb, xa, xb in plan:
        for left, right in ((ta, tb), (xa, xb)):
            if left != right and left >= 0:
                needed_set.update((left, right))
    needed = sorted(needed_set)
    text_list = list(texts)
    embedded = [text_list[i] for i in needed]
    vectors = embed(embedded) if embedded else np.zeros((0, 1), np.float32)
    emb = {i: vectors[k] for k, i in enumerate(needed)}

    def edist(i: int, j: int) -> float:
        if i < 0:  # no answer span on a side (see `missing` above)
            return float("nan")
        return 0.0 if i == j else cosine_distance(emb[i], emb[j])

    def span(side: ScoredSide, ids: tuple[int, ...]) -> str | None:
        if side.scaffold == NO_ANSWER_STATUS:
            return None  # no answer span: correctness is missing, not "wrong"
        t = decoded.get(ids)
        if t is None:
            t = decoded[ids] = decode_text(ids)
        return t

    rows = []
    ends = PromptEndScorer().many([(s.a.gen, s.b.gen) for s in sides])
    prompt_end = {id(s): e for s, e in zip(sides, ends)}
    metrics, score_cls = registry.metrics(), registry.pair_score_class()
    for s, L, traj, ta, tb, t_ans_a, t_ans_b in plan:
        pid = s.pair.pair_id
        view = PairView(s, L, traj, prompt_end[id(s)], (ta, tb, t_ans_a, t_ans_b), edist, span,
                        (twin.get((pid, "ab")), twin.get((pid, "ba"))))
        p = s.pair
        rows.append(score_cls(model=s.a.gen.model, variant=s.a.gen.variant, pair_id=p.pair_id, prompt_id=p.prompt_id,
                              rung=p.rung, edit_kind=p.edit_kind, length=L, **{m.name: m.compute(view) for m in metrics}))
    return rows, embedded


class PromptEndScorer:
    """Scores pairs' prompt ends, preparing each side-A row once.

    Side A (the base prompt) repeats across its ~23 pairs: its prepared form
    (float64 probabilities, 1.2 MB at V = 151,936) is kept while consecutive
    pairs share it, keyed by the identity of the row (a reference is held, so
    the id cannot be reused). Side B is usually met once: it is prepared into a
    scratch row. Only one side A is held at a time, so a cell of 900 prompts
    does not keep 900 prepared rows.
    """

    def __init__(self) -> None:
        self._a: dv.Prepared | None = None
        self._ws = dv.Workspace()

    def __call__(self, ga: Generation, gb: Generation) -> PromptEndScores:
        """The scores of one pair (see :func:`prompt_end_scores`)."""
        a, b = ga.prompt_end, gb.prompt_end
        la, lb = ga.prompt_end_logprobs, gb.prompt_end_logprobs
        if la is not None and lb is not None:
            pa = self._side_a(la)
            pb = pa if lb is la else dv.Prepared(lb, out=self._ws.buf("b", np.size(lb)))
            js, kab, kba = dv.divergences(pa, pb, self._ws)
        else:
            js = kab = kba = float("nan")
        return js, kab, kba, a.top1_id != b.top1_id, a.top1_prob, b.top1_prob, a.margin, b.margin

    def _side_a(self, la: np.ndarray) -> dv.Prepared:
        if self._a is None or self._a.raw is not la:
            self._a = dv.Prepared(la)
        return self._a

    def many(self, pairs: Sequence[tuple[Generation, Generation]]) -> list[PromptEndScores]:
        """Scores of every (side A, side B) pair, in order; pairs that share side A are computed together."""
        groups: dict[int, list[int]] = {}
        for i, (ga, _) in enumerate(pairs):
            groups.setdefault(id(ga), []).append(i)
        out: list[PromptEndScores | None] = [None] * len(pairs)
        for idx in groups.values():
            for i in idx:
                out[i] = self(*pairs[i])
        self._a = None  # a cell's rows are not kept past its scoring
        return out  # type: ignore[return-value]


_SCORER = PromptEndScorer()


def prompt_end_scores(ga: Generation, gb: Generation) -> PromptEndScores:
    """(JS, KL(a||b), KL(b||a), top-1 flip, top-1 prob a, b, margin a, b) of two prompt-end distributions.

    The divergences need both full distributions: a run scores its pairs inside
    the cell, where every side's full row is in memory (harness.decode.prompt_end).
    A side read back without it (``--store-full-dist`` off) gives NaN divergences,
    never an estimate from the top-k. The rest comes from the compact records.
    Consecutive calls with the same side A prepare it once (:class:`PromptEndScorer`).
    """
    return _SCORER(ga, gb)


def kept_pairs(pairs: Sequence[PromptPair], audit: Sequence[AuditRow]) -> list[PromptPair]:
    kept = {a.pair_id for a in audit if a.kept}
    return [p for p in pairs if p.pair_id in kept]


def scored_sides_from_frame(frame: pd.DataFrame, lengths: Sequence[int]) -> dict[tuple[str, int], ScoredSide]:
    out = {}
    for row in frame.to_dict("records"):
        g = generation_from_row(row, lengths)
        out[(g.prompt_key, g.replicate)] = ScoredSide(g, str(row.get("scaffold_status", "none")), int(row.get("answer_start", 0)))
    return out


def score_generations(pairs: Sequence[PromptPair], audit: Sequence[AuditRow], sides: dict[str, tuple[str, str, int]],
                      gens: Sequence[Generation], lengths: Sequence[int], decode_text: Callable,
                      scaffold, embed, twin: Mapping[tuple[str, str], TwinSteps] | None = None
                      ) -> tuple[dict[tuple[str, int], ScoredSide], list[PairScore], list[str]]:
    """One cell's scoring: each generation's scaffold split, then every kept pair scored.

    ``sides`` maps a pair to the prompt keys of its two sides and side B's replicate
    (harness.decode.requests); ``scaffold`` is the model's registry entry for it; ``twin`` as in score_pairs.
    Returns the scored sides (by prompt key and replicate), the pair scores and the texts embedded.
    """
    scored = {(g.prompt_key, g.replicate): ScoredSide(g, *answer_start_token(g.gen_ids, decode_text, scaffold))
              for g in gens}
    pair_sides = [PairSides(p, scored[(sides[p.pair_id][0], 0)], scored[(sides[p.pair_id][1], sides[p.pair_id][2])])
                  for p in kept_pairs(pairs, audit)]
    scores, texts = score_pairs(pair_sides, lengths, decode_text, embed, twin)
    return scored, scores, texts
