"""Frozen records of the score stage: pair identities and metric specs (a pairs.parquet row is one of each
registered metric: harness.score.registry), scored sides, scaffold splits,
teacher-forced step divergences and the embedder's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from harness.decode.greedy import Generation
from harness.ladder.records import PromptPair

Status = Literal["none", "absent", "closed", "unclosed"]
"""none: the model has no scaffold configured; absent: configured but not opened in this output."""


@dataclass(frozen=True)
class PairIdentity:
    """The columns of a pairs.parquet row that say which pair it is; every other column is a registered metric
    (harness.score.pair_metrics), and ``PairScore`` is these fields followed by the metrics'
    (harness.score.registry.pair_score_class)."""

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


Aggregate = Literal["mean", "rate", "none"]
"""How the summary aggregates a metric per model x variant x rung x length: ``mean`` over its finite values,
``rate`` (a bool's share of True, over its finite values), or ``none`` (not in summary.json's cells)."""
Better = Literal["lower", "higher", "none"]
"""Which direction of a metric is the more stable one (``none``: a descriptor, not a score)."""
Dtype = Literal["float", "int", "bool", "str"]
"""A column's Python type; pairs.parquet stores float64, int64, bool and object (string) columns."""


@dataclass(frozen=True)
class GateUse:
    """How ``stabprobe gate`` may use a metric: the mean of the column over a neighbourhood's perturbed pairs,
    compared with an upper limit the gate file gives as ``max_<check>``."""

    check: str
    """The check's name (gate.json ``metric``, the JUnit case); the gate file's key is ``max_<check>``."""
    lo: float
    """Smallest limit the gate file may give."""
    hi: float | None
    """Largest limit the gate file may give (None: no upper bound)."""
    description: str
    """One line for the gate's documentation: what the mean is over."""
    needs_answer: bool = False
    """The metric is missing without an expected answer: the neighbourhood must give ``answer``."""


@dataclass(frozen=True)
class MetricSpec:
    """One pair metric, declared once: its pairs.parquet column, how it is computed, and how the rest of the
    harness (summary means, report columns, determinism check, gate, scorer version) treats it."""

    name: str
    """The pairs.parquet column (and summary.json cell key when aggregated)."""
    dtype: Dtype
    """The column's type; ``compute`` returns exactly this Python type (pandas infers the column from it)."""
    compute: Callable[[Any], Any]
    """The value for one pair at one length from a harness.score.pair_view.PairView (both sides, L, shared
    intermediates such as the first divergence and the prompt-end scores)."""
    doc: str
    """What it means (the PairScore field's documentation)."""
    unit: str = ""
    """Unit or range, e.g. ``tokens``, ``nats``, ``[0, 2]``; '' for labels."""
    nan: str = ""
    """What NaN means for this metric; '' when it is never NaN."""
    aggregate: Aggregate = "none"
    """How the summary aggregates it (Aggregate)."""
    better: Better = "none"
    """The more stable direction (Better)."""
    gate: GateUse | None = None
    """How the gate may use it; None: the gate may not."""
    identical_zero: bool = False
    """Exactly 0 on the identical rung of a deterministic run: part of the determinism verdict."""
    answer_span: bool = False
    """Read on the answer span: missing by construction where a side has no answer span (answer_missing)."""
    report: str = ""
    """Header of its column in the report's distances table; '' when not shown there (aggregated metrics only)."""
    report_ci: bool = False
    """The report shows the 95% CI beside the mean."""
    report_format: Literal["fixed", "3g"] = "fixed"
    """``fixed``: 4 decimals (harness.report.text.fmt); ``3g``: three significant digits (tiny divergences)."""
    version: int = 1
    """Bumped when the computation changes: part of the scorer version, so cached scored tables are not reused."""
    optional: bool = False
    """Computed only where the cell can (e.g. the twin divergence: HF engine only): a NaN says nothing about
    determinism, so the verdict reads the finite values only (as for the answer-span columns)."""


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


@dataclass(frozen=True)
class TwinPass:
    """One teacher-forced pass of the twin divergence (harness.score.twin): an output fed after a prompt."""

    prompt_ids: tuple[int, ...]
    """The rendered prompt's token ids (the output's own prompt, or the pair's other prompt)."""
    tokens: tuple[int, ...]
    """The output read: every token the engine chose, the end-token step included (``trace_top1_id``)."""


@dataclass(frozen=True)
class TwinSteps:
    """Per generated position of one output: the model after its own prompt against after the pair's other one."""

    kl: np.ndarray
    """KL(p_own || p_other) per step, nats (float64, >= 0; exactly 0 where the two logit rows are equal)."""
    same_top1: np.ndarray
    """argmax p_own == argmax p_other per step (bool)."""
    llr: np.ndarray
    """log p_other(y_t) - log p_own(y_t) for the output's token y_t (float64; summed, POSIX's log-likelihood ratio)."""
