"""Frozen records of the ladder stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from harness.ladder.answers import AnswerSpec

# Tightest control to loosest; the order is used in every table.
# casing, format and typo change the surface of the words; filler adds words
# that carry no task content; option_order keeps the question but moves the
# answer (a label now names another option), so it sits past paraphrase.
RUNGS: tuple[str, ...] = (
    "identical",
    "noop_format",
    "punctuation",
    "structural",
    "casing",
    "format",
    "typo",
    "synonym",
    "filler",
    "paraphrase",
    "option_order",
    "semantic_small",
    "positive_control",
)
Rung = Literal[
    "identical",
    "noop_format",
    "punctuation",
    "structural",
    "casing",
    "format",
    "typo",
    "synonym",
    "filler",
    "paraphrase",
    "option_order",
    "semantic_small",
    "positive_control",
]
MECHANICAL_RUNGS = ("noop_format", "punctuation", "structural")
"""The rungs every prompt with a visible character gets."""
SEEDED_RUNGS = ("casing", "format", "typo", "filler", "option_order")
"""Rungs made only by seeded edits that a prompt may not admit (no capital, no field, no option list)."""
CURATED_RUNGS = ("synonym", "paraphrase", "semantic_small", "positive_control")


@dataclass(frozen=True)
class BasePrompt:
    id: str
    """Stable id; part of every pair id and of the seed of every edit."""
    text: str
    topic: str = "general"
    """Topic label; the positive control pairs a prompt with one of another topic."""
    in_domain: bool = False
    """True for prompts inside the demo models' training tasks."""
    expected: AnswerSpec | None = None
    """Expected answer and its check (harness.ladder.answers); None: correctness is not measured."""


@dataclass(frozen=True)
class Variant:
    """A curated variant of a base prompt on one rung."""

    text: str
    edit_kind: str = "curated"
    note: str = ""
    answer: str | None = None
    """The variant's own expected answer (same check as its base prompt); None: the base prompt's, except on
    rungs that change the task (semantic_small, positive_control), where it is then unknown."""


@dataclass(frozen=True)
class PromptSet:
    """Everything a ladder is built from: the base prompts, their curated variants and the seed name.

    Building is a pure function of this record (``build_ladder``), so a ladder
    written back to YAML from it yields the same pairs when loaded again.
    """

    name: str
    """Ladder name; the first part of every edit's seed key."""
    source: str
    source_sha256: str
    prompts: tuple[BasePrompt, ...]
    curated: Mapping[str, Mapping[str, tuple[Variant, ...]]] = field(default_factory=dict)
    """``curated[prompt_id][rung]``: variants for the curated rungs (synonym, paraphrase, ...)."""
    edit_kinds: tuple[str, ...] | None = None
    """Generated edit kinds to make (seeded kinds and ``lexicon``); None means all."""
    description: str = ""
    pairs_per_kind: int = 1
    """Pairs each seeded kind makes per prompt, each from its own draw (duplicates are skipped, and said)."""


@dataclass(frozen=True)
class PromptPair:
    pair_id: str
    """``<prompt id>/<rung>/<edit kind>``, unique within a ladder."""
    prompt_id: str
    rung: Rung
    edit_kind: str
    """Finer label of the edit, e.g. ``trailing_space`` or ``curated``."""
    prompt_a: str
    prompt_b: str
    origin: Literal["generated", "curated", "imported", "paired"]
    note: str = ""
    answer_a: str | None = None
    """Expected answer of side a (None: not known, correctness is missing)."""
    answer_b: str | None = None
    """Expected answer of side b: side a's, or where the edit moved it (option_order), or None where the task changed."""
    check: str | None = None
    """How both sides are checked (harness.ladder.answers.ANSWER_CHECKS); None when neither side has an answer."""
    tolerance: float | None = None
    """Tolerance of a ``number`` check."""

    def expected(self, side: str) -> AnswerSpec | None:
        """The AnswerSpec of side ``a`` or ``b`` (None when that side's answer is unknown)."""
        answer = self.answer_a if side == "a" else self.answer_b
        return None if answer is None or self.check is None else AnswerSpec(answer, self.check, self.tolerance)


@dataclass(frozen=True)
class SkippedEdit:
    """An edit that could not be made on a prompt (e.g. no comma to swap): recorded, never silent."""

    prompt_id: str
    rung: str
    edit_kind: str
    reason: str


@dataclass(frozen=True)
class Ladder:
    name: str
    source: str
    """File the ladder came from."""
    source_sha256: str
    prompts: tuple[BasePrompt, ...]
    pairs: tuple[PromptPair, ...]
    skipped: tuple[SkippedEdit, ...] = field(default_factory=tuple)
    edit_kinds: tuple[str, ...] | None = None
    """The generated edit kinds the ladder was restricted to; None means all."""
    pairs_per_kind: int = 1
    """Pairs each seeded kind was asked to make per prompt."""

    def rung_counts(self) -> dict[str, int]:
        counts = {r: 0 for r in RUNGS}
        for p in self.pairs:
            counts[p.rung] += 1
        return counts
