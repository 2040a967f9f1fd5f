"""Per-pair scores: one row per pair x model x variant x length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from harness.audit import AuditRow
from harness.decode import Generation
from harness.ladder.records import PromptPair
from harness.metrics import divergence as dv
from harness.metrics.edit_distance import first_divergence, normalized_edit_distance, token_edit_distance


@dataclass(frozen=True)
class PairScore:
    model: str
    variant: str
    pair_id: str
    prompt_id: str
    rung: str
    edit_kind: str
    length: int
    """Output length L: metrics use the first L generated tokens."""
    emb_dist: float
    """1 - cos of MiniLM embeddings of the two decoded prefixes."""
    tok_edit: int
    tok_edit_norm: float
    first_div: int
    """1-based first differing step within the first L tokens; 0 = identical prefixes."""
    hidden_dist: float
    """Cosine distance of the mean post-norm hidden states over the first L steps."""
    len_a: int
    len_b: int
    js: float
    kl_ab: float
    kl_ba: float
    top1_flip: bool
    top1_prob_a: float
    top1_prob_b: float
    margin_a: float
    margin_b: float
    prompt_key_a: str
    prompt_key_b: str


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


@dataclass(frozen=True)
class PairSides:
    pair: PromptPair
    gen_a: Generation
    gen_b: Generation


def score_pairs(
    sides: Sequence[PairSides],
    lengths: Sequence[int],
    decode_text: Callable[[tuple[int, ...]], str],
    embed: Callable[[list[str]], np.ndarray],
) -> tuple[list[PairScore], list[str]]:
    """Scores for every pair and length, and the distinct texts that were embedded."""
    texts: dict[str, int] = {}

    def text_index(ids: tuple[int, ...]) -> int:
        t = decode_text(ids)
        if t not in texts:
            texts[t] = len(texts)
        return texts[t]

    plan = []
    for s in sides:
        for L in lengths:
            ia, ib = s.gen_a.gen_ids[:L], s.gen_b.gen_ids[:L]
            plan.append((s, L, ia, ib, text_index(ia), text_index(ib)))
    text_list = list(texts)
    emb = embed(text_list)

    rows = []
    prompt_end_cache: dict[int, tuple] = {}
    for s, L, ia, ib, ta, tb in plan:
        key = id(s)
        if key not in prompt_end_cache:
            la, lb = s.gen_a.prompt_end_logprobs, s.gen_b.prompt_end_logprobs
            prompt_end_cache[key] = (
                dv.js(la, lb), dv.kl(la, lb), dv.kl(lb, la), dv.top1_flip(la, lb),
                dv.top1_prob(la), dv.top1_prob(lb), dv.logprob_margin(la), dv.logprob_margin(lb),
            )
        js, kab, kba, flip, pa, pb, ma, mb = prompt_end_cache[key]
        p = s.pair
        rows.append(
            PairScore(
                model=s.gen_a.model, variant=s.gen_a.variant, pair_id=p.pair_id, prompt_id=p.prompt_id,
                rung=p.rung, edit_kind=p.edit_kind, length=L,
                emb_dist=0.0 if ta == tb else cosine_distance(emb[ta], emb[tb]),
                tok_edit=token_edit_distance(ia, ib), tok_edit_norm=normalized_edit_distance(ia, ib),
                first_div=first_divergence(ia, ib),
                hidden_dist=cosine_distance(s.gen_a.hidden_means[L], s.gen_b.hidden_means[L]),
                len_a=len(ia), len_b=len(ib), js=js, kl_ab=kab, kl_ba=kba, top1_flip=bool(flip),
                top1_prob_a=pa, top1_prob_b=pb, margin_a=ma, margin_b=mb,
                prompt_key_a=s.gen_a.prompt_key, prompt_key_b=s.gen_b.prompt_key,
            )
        )
    return rows, text_list


def kept_pairs(pairs: Sequence[PromptPair], audit: Sequence[AuditRow]) -> list[PromptPair]:
    kept = {a.pair_id for a in audit if a.kept}
    return [p for p in pairs if p.pair_id in kept]
