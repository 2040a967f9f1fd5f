"""Frozen records of the ladder stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping


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
DEFAULT_CHECK = "exact"
"""The check of an answer that names none (harness.ladder.answers)."""


@dataclass(frozen=True)
class AnswerSpec:
    """An expected answer and how an answer span is checked against it."""

    answer: str
    """The expected answer (a pattern for ``regex``, a decimal number for ``number``, one letter for ``choice``)."""
    check: str = DEFAULT_CHECK
    """One of harness.ladder.answers.ANSWER_CHECKS."""
    tolerance: float | None = None
    """Largest accepted |found - answer| of a ``number`` check (None: 0); only ``number`` takes one."""


@dataclass(frozen=True)
class BasePrompt:
    id: str
    """Stable id; part of every pair id and of the seed of every edit."""
    text: str
    """The prompt as the user would type it (side A of its pairs)."""
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
    """The variant prompt (side B of its pair)."""
    edit_kind: str = "curated"
    """The pair's edit_kind ('curated' unless the file names one)."""
    note: str = ""
    """Free text carried into the pair's note; '' when none."""
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
    """File the prompts came from."""
    source_sha256: str
    """Hex sha256 of that file's text (harness.core.hashing.sha256_text)."""
    prompts: tuple[BasePrompt, ...]
    """The base prompts, in file order."""
    curated: Mapping[str, Mapping[str, tuple[Variant, ...]]] = field(default_factory=dict)
    """``curated[prompt_id][rung]``: variants for the curated rungs (synonym, paraphrase, ...)."""
    edit_kinds: tuple[str, ...] | None = None
    """Generated edit kinds to make (seeded kinds and ``lexicon``); None means all."""
    description: str = ""
    """Free text from the file; '' when none."""
    pairs_per_kind: int = 1
    """Pairs each seeded kind makes per prompt, each from its own draw (duplicates are skipped, and said)."""


@dataclass(frozen=True)
class PromptPair:
    pair_id: str
    """``<prompt id>/<rung>/<edit kind>``, unique within a ladder."""
    prompt_id: str
    """Base prompt of the pair (side A is its text, except for imported pairs)."""
    rung: Rung
    """The pair's rung (RUNGS)."""
    edit_kind: str
    """Finer label of the edit, e.g. ``trailing_space`` or ``curated``."""
    prompt_a: str
    """Side A's prompt text (the base prompt)."""
    prompt_b: str
    """Side B's prompt text (the edited or paired prompt; equal to prompt_a on the identical rung)."""
    origin: Literal["generated", "curated", "imported", "paired"]
    """generated (a seeded or mechanical edit), curated (a variant from the ladder file), imported (a published pair file) or paired (the positive control: another prompt)."""
    note: str = ""
    """What the edit did (e.g. the misspelt word, ``paired with p007``); '' when nothing to say."""
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
    """Base prompt the edit could not act on."""
    rung: str
    """Rung of the edit."""
    edit_kind: str
    """The edit kind that was skipped."""
    reason: str
    """Why, in words (e.g. 'no comma to swap')."""


@dataclass(frozen=True)
class Ladder:
    name: str
    """Ladder name; the first part of every edit's seed key."""
    source: str
    """File the ladder came from."""
    source_sha256: str
    """Hex sha256 of the source file's text (as recorded in ladder.json when rebuilt from a run directory)."""
    prompts: tuple[BasePrompt, ...]
    """The base prompts (empty when the ladder is rebuilt from a run's ladder.json)."""
    pairs: tuple[PromptPair, ...]
    """Every pair, in build order."""
    skipped: tuple[SkippedEdit, ...] = field(default_factory=tuple)
    """Edits that could not be made, each with its reason; empty when none."""
    edit_kinds: tuple[str, ...] | None = None
    """The generated edit kinds the ladder was restricted to; None means all."""
    pairs_per_kind: int = 1
    """Pairs each seeded kind was asked to make per prompt."""

    def rung_counts(self) -> dict[str, int]:
        counts = {r: 0 for r in RUNGS}
        for p in self.pairs:
            counts[p.rung] += 1
        return counts


@dataclass(frozen=True)
class SkipGroup:
    """Prompts that did not get one edit kind, for one reason."""

    edit_kind: str
    """The edit kind that was not made."""
    reason: str
    """Why (SkippedEdit.reason, shared by the whole group)."""
    prompt_ids: tuple[str, ...]
    """Base prompts it was skipped on, in ladder order."""


@dataclass(frozen=True)
class RungCoverage:
    rung: str
    """The rung (RUNGS order)."""
    pairs: int
    """Pairs on the rung."""
    prompts: int
    """Base prompts with at least one pair on this rung."""
    empty_reason: str
    """Why the rung has no pair at all; '' when it has some."""
    skipped: tuple[SkipGroup, ...]
    """Edits of this rung that were skipped, grouped by edit kind and reason; empty when none."""


@dataclass(frozen=True)
class PromptsFile:
    prompt_set: PromptSet
    """The prompts read (duplicates dropped), named by ``--name`` or the file's stem: the seed name of every edit."""
    blank_lines: int
    """Blank lines skipped in a ``.txt`` file (0 for the other formats)."""
    duplicates: tuple[tuple[str, str], ...] = ()
    """(dropped id, kept id) for each prompt whose text repeats an earlier one (the first is kept)."""

    def duplicates_note(self) -> str | None:
        """One line for the terminal, or None: duplicates are dropped, never silently doubled."""
        if not self.duplicates:
            return None
        shown = ", ".join(f"{d} = {k}" for d, k in self.duplicates[:5])
        more = f", and {len(self.duplicates) - 5} more" if len(self.duplicates) > 5 else ""
        return (f"{self.prompt_set.source}: {len(self.duplicates)} duplicate prompt(s) skipped "
                f"(same text as an earlier prompt: {shown}{more})")
