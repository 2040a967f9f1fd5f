"""Per-pair scores: one row per pair x model x variant x length."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from harness.audit.records import AuditRow
from harness.decode.greedy import Generation
from harness.decode.table import generation_from_row
from harness.ladder.records import PromptPair
from harness.score.answers import correctness
from harness.score.metrics import divergence as dv
from harness.score.records import PairScore, PairSides, ScoredSide
from harness.score.scaffold import answer_start_token
from harness.stability.traces import first_divergence_margin_percentile
from harness.score.metrics.edit_distance import (
    first_divergence,
    levenshtein_trajectory,
    normalized_edit_distance,
    token_edit_distance,
)

TRIVIAL_SHIFT = 2
"""A single inserted or deleted token keeps d(t) <= 2: the trajectory's reference line."""


# Columns that must be exactly 0 on the identical rung of a deterministic run.
DIVERGENCE_COLUMNS = (
    "emb_dist", "emb_dist_answer", "tok_edit", "tok_edit_norm", "tok_edit_norm_answer", "first_div",
    "lev_traj_max", "steps_above_shift", "hidden_dist", "js", "kl_ab", "kl_ba",
)
ANSWER_COLUMNS = ("emb_dist_answer", "tok_edit_norm_answer")
"""Missing by construction where a side has no answer span (answer_missing)."""
NO_ANSWER_STATUS = "unclosed"
"""A scaffold that never closed leaves nothing known to be the answer (harness.score.scaffold)."""


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


def _margin_stats(a: Generation, b: Generation, L: int, fd: int) -> tuple[float, float, float, float, float]:
    ma, mb = a.trace_margin[:L], b.trace_margin[:L]
    min_a = float(ma.min()) if ma.size else float("nan")
    min_b = float(mb.min()) if mb.size else float("nan")
    if fd == 0 or fd > L:
        return min_a, min_b, float("nan"), float("nan"), float("nan")
    # Step fd (1-based) was chosen by trace entry fd-1 on both sides.
    da = float(ma[fd - 1]) if fd - 1 < ma.size else float("nan")
    db = float(mb[fd - 1]) if fd - 1 < mb.size else float("nan")
    return min_a, min_b, da, db, first_divergence_margin_percentile(ma, fd)


def _at_step(trace: np.ndarray, fd: int, L: int) -> float:
    if fd == 0 or fd > L or fd - 1 >= len(trace):
        return float("nan")
    return float(trace[fd - 1])


def score_pairs(
    sides: Sequence[PairSides],
    lengths: Sequence[int],
    decode_text: Callable[[tuple[int, ...]], str],
    embed: Callable[[list[str]], np.ndarray],
) -> tuple[list[PairScore], list[str]]:
    """Scores for every pair and length, and the distinct texts that were embedded (only those compared with another)."""
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
            ia, ib = ga.gen_ids[:L], gb.gen_ids[:L]
            aa, ab = s.a.answer_ids(L), s.b.answer_ids(L)
            xa, xb = (-1, -1) if missing else (text_index(aa), text_index(ab))
            plan.append((s, L, ia, ib, aa, ab, traj[:L], text_index(ia), text_index(ib), xa, xb))
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
    for s, L, ia, ib, aa, ab, traj, ta, tb, t_ans_a, t_ans_b in plan:
        ga, gb = s.a.gen, s.b.gen
        js, kab, kba, flip, pa, pb, ma, mb = prompt_end[id(s)]
        fd = first_divergence(ia, ib)
        min_a, min_b, da, db, pct = _margin_stats(ga, gb, L, fd)
        tcb_a = _at_step(ga.trace_delta_tcb, fd, L)
        flip_a = _at_step(ga.trace_flip_radius, fd, L)
        p = s.pair
        ya = correctness(span(s.a, aa), p.expected("a")) if p.answer_a is not None else float("nan")
        yb = correctness(span(s.b, ab), p.expected("b")) if p.answer_b is not None else float("nan")
        rows.append(
            PairScore(
                model=ga.model, variant=ga.variant, pair_id=p.pair_id, prompt_id=p.prompt_id,
                rung=p.rung, edit_kind=p.edit_kind, length=L,
                emb_dist=edist(ta, tb), emb_dist_answer=edist(t_ans_a, t_ans_b),
                tok_edit=token_edit_distance(ia, ib), tok_edit_norm=normalized_edit_distance(ia, ib),
                tok_edit_norm_answer=float("nan") if t_ans_a < 0 else normalized_edit_distance(aa, ab),
                answer_missing=t_ans_a < 0,
                first_div=fd,
                lev_traj_max=int(traj.max()) if traj.size else 0,
                lev_traj_mean=float(traj.mean()) if traj.size else 0.0,
                steps_above_shift=int((traj > TRIVIAL_SHIFT).sum()),
                hidden_dist=cosine_distance(ga.hidden_means[L], gb.hidden_means[L]),
                len_a=len(ia), len_b=len(ib), answer_len_a=len(aa), answer_len_b=len(ab),
                scaffold_a=s.a.scaffold, scaffold_b=s.b.scaffold,
                min_margin_a=min_a, min_margin_b=min_b, div_margin_a=da, div_margin_b=db, div_margin_pct_a=pct,
                div_delta_tcb_a=tcb_a, div_flip_radius_a=flip_a,
                js=js, kl_ab=kab, kl_ba=kba, top1_flip=bool(flip),
                top1_prob_a=pa, top1_prob_b=pb, margin_a=ma, margin_b=mb,
                prompt_key_a=ga.prompt_key, prompt_key_b=gb.prompt_key,
                correct_a=ya, correct_b=yb, answer_flip=abs(ya - yb),
            )
        )
    return rows, embedded


PromptEndScores = tuple[float, float, float, bool, float, float, float, float]
"""(JS, KL(a||b), KL(b||a), top-1 flip, top-1 prob a, b, margin a, b)."""


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
                      scaffold, embed) -> tuple[dict[tuple[str, int], ScoredSide], list[PairScore], list[str]]:
    """One cell's scoring: each generation's scaffold split, then every kept pair scored.

    ``sides`` maps a pair to the prompt keys of its two sides and side B's replicate
    (harness.decode.requests); ``scaffold`` is the model's registry entry for it.
    Returns the scored sides (by prompt key and replicate), the pair scores and the texts embedded.
    """
    scored = {(g.prompt_key, g.replicate): ScoredSide(g, *answer_start_token(g.gen_ids, decode_text, scaffold))
              for g in gens}
    pair_sides = [PairSides(p, scored[(sides[p.pair_id][0], 0)], scored[(sides[p.pair_id][1], sides[p.pair_id][2])])
                  for p in kept_pairs(pairs, audit)]
    scores, texts = score_pairs(pair_sides, lengths, decode_text, embed)
    return scored, scores, texts
