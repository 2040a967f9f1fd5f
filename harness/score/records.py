"""Frozen records of the score stage: pair scores (one pairs.parquet row each), scored sides, scaffold splits,
teacher-forced step divergences and the embedder's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from harness.decode.greedy import Generation
from harness.ladder.records import PromptPair

Status = Literal["none", "absent", "closed", "unclosed"]
"""none: the model has no scaffold configured; absent: configured but not opened in this output."""


@dataclass(frozen=True)
class PairScore:
    model: str
    """Model name (registry entry or local directory)."""
    variant: str
    """Weight/engine variant of the model (e.g. bf16, int8, -nothink); the reference is bf16."""
    pair_id: str
    """The ladder pair (``<prompt id>/<rung>/<edit kind>``; ``drift/<key>`` in drift.parquet)."""
    prompt_id: str
    """Base prompt of the pair."""
    rung: str
    """Ladder rung of the pair (harness.ladder.records.RUNGS)."""
    edit_kind: str
    """Finer label of the edit (e.g. ``trailing_space``, ``curated``)."""
    length: int
    """Output length L: metrics use the first L generated tokens."""
    emb_dist: float
    """1 - cos of MiniLM embeddings of the two decoded prefixes (raw output)."""
    emb_dist_answer: float
    """The same on the answer span: scaffold removed, first L answer tokens; nan when answer_missing."""
    tok_edit: int
    """Levenshtein distance (tokens) between the first L generated token ids of the two sides; 0 = equal."""
    tok_edit_norm: float
    """tok_edit / max(len_a, len_b), in [0, 1]; 0.0 when both sides are empty."""
    tok_edit_norm_answer: float
    """Normalized token edit distance of the answer spans; nan when answer_missing."""
    answer_missing: bool
    """A side has no answer span (its scaffold never closed): the answer-span metrics are missing, not 0."""
    first_div: int
    """1-based first differing step within the first L tokens; 0 = identical prefixes."""
    lev_traj_max: int
    """max_t Lev(A[:t], B[:t]) for t <= L."""
    lev_traj_mean: float
    """Mean over t <= L of Lev(A[:t], B[:t]) in tokens; 0.0 when both outputs are empty."""
    steps_above_shift: int
    """Steps t <= L whose trajectory exceeds the trivial-shift line (d(t) > 2)."""
    hidden_dist: float
    """Cosine distance of the mean post-norm hidden states over the first L steps."""
    len_a: int
    """Generated tokens of side A within the first L (fewer than L when it stopped at EOS)."""
    len_b: int
    """The same for side B."""
    answer_len_a: int
    """Tokens of side A's answer span within its first L answer tokens (0 when the span is empty or missing)."""
    answer_len_b: int
    """The same for side B."""
    scaffold_a: str
    """none / absent / closed / unclosed (see harness.score.scaffold)."""
    scaffold_b: str
    """The same for side B."""
    min_margin_a: float
    """Smallest top-1 minus top-2 logit over side A's first L steps."""
    min_margin_b: float
    """The same for side B."""
    div_margin_a: float
    """Side A's margin at the first-divergence step; nan when the prefixes agree."""
    div_margin_b: float
    """Side B's margin at the first-divergence step; nan when the prefixes agree."""
    div_margin_pct_a: float
    """Percentile (0-100) of div_margin_a within side A's first L margins: low = the split came at a low-margin step."""
    div_delta_tcb_a: float
    """Side A's Token Constraint Bound at the first-divergence step (nan when none or unavailable)."""
    div_flip_radius_a: float
    """Side A's argmax-flip radius at the first-divergence step."""
    js: float
    """Jensen-Shannon divergence (nats) of the two prompt-end next-token distributions; nan when a side's full row was not kept."""
    kl_ab: float
    """KL(a || b) of the prompt-end distributions, nats; nan as js."""
    kl_ba: float
    """KL(b || a) of the prompt-end distributions, nats; nan as js."""
    top1_flip: bool
    """The two prompt-end argmax tokens differ."""
    top1_prob_a: float
    """Probability of side A's prompt-end top-1 token (nan for an empty row)."""
    top1_prob_b: float
    """The same for side B."""
    margin_a: float
    """Side A's prompt-end log-probability margin of the top two tokens (= their logit margin); nan with fewer than two."""
    margin_b: float
    """The same for side B."""
    prompt_key_a: str
    """Key of side A's rendered prompt ids (harness.decode.greedy.prompt_key: 16 hex digits of a sha256)."""
    prompt_key_b: str
    """The same for side B."""
    correct_a: float
    """1 / 0: side a's answer span passes its expected answer's check (harness.score.answers); nan: no expected
    answer, or no answer span."""
    correct_b: float
    """The same for side b, against side b's expected answer."""
    answer_flip: float
    """|correct_a - correct_b|: the pair's correctness flipped (either direction); nan when a side is nan."""


@dataclass(frozen=True)
class ScoredSide:
    """A generation with its scaffold split (index of the first answer token)."""

    gen: Generation
    """The side's generation (its tokens, traces and prompt-end record)."""
    scaffold: str
    """Scaffold status of the output: none / absent / closed / unclosed (Status)."""
    answer_start: int
    """Index into ``gen.gen_ids`` of the first answer token (len(gen_ids) when the answer is empty)."""

    def answer_ids(self, L: int) -> tuple[int, ...]:
        return self.gen.gen_ids[self.answer_start :][:L]


@dataclass(frozen=True)
class PairSides:
    pair: PromptPair
    """The ladder pair."""
    a: ScoredSide
    """Side A (the pair's prompt_a) as generated and split."""
    b: ScoredSide
    """Side B (prompt_b)."""


@dataclass(frozen=True)
class ScaffoldSplit:
    status: Status
    """none / absent / closed / unclosed (see Status); unclosed leaves the answer span empty."""
    answer_char: int
    """Character offset where the answer starts; len(text) when the answer is empty."""


@dataclass(frozen=True)
class StepDivergence:
    """Per generated position of one output: the reference and the variant on the same tokens."""

    kl: np.ndarray
    """KL(p_ref || p_q) per step, nats (float64, >= 0)."""
    same_top1: np.ndarray
    """argmax p_q == argmax p_ref per step (bool)."""
    dp: np.ndarray
    """p_q(y_t) - p_ref(y_t) for the reference token y_t (float64)."""


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    """Embedder name (``all-MiniLM-L6-v2`` for the bundled one, else the directory's name)."""
    path: str
    """Local directory the embedder was loaded from."""
    sha256: str
    """``sha256:<hex>`` of the embedder's content files (harness.core.hashing): part of every results key."""
    max_seq_length: int
    """Word pieces the embedder reads at once (special tokens included)."""
    long_text: str = "windows"
    """How texts longer than the window are embedded: 'windows' = overlapping windows of at most ``window``
    word pieces, each embedded and normalized, averaged weighted by their word pieces, renormalized."""
    window: int = 0
    """Word pieces per window (max_seq_length minus special tokens and a margin for re-tokenization)."""
    overlap: int = 0
    """Word pieces shared by consecutive windows, so no sentence is only ever seen cut in two."""
    threads: int = 1
    """Torch threads the embedder computes with: every CPU this process may use (the decode keeps its own
    setting). oneDNN's fp32 products gave bitwise the same vectors at 1 and 2 threads on the development
    machine (2026-12-01) in 0.56 s instead of 0.86-1.06 s; the count is in the cache keys in case a machine
    differs."""

    @property
    def method(self) -> str:
        """One string for cache keys: a change of window or overlap changes every long text's vector (and threads
        might: see ``threads``)."""
        return f"{self.long_text}:{self.window}/{self.overlap}" + ("" if self.threads == 1 else f"/t{self.threads}")
