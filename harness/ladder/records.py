"""Frozen records of the ladder stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping


@dataclass(frozen=True)
class RungInfo:
    """One rung of the ladder: how its pairs are made and what it means to the statistics.

    The rung table (``RUNG_TABLE``) is the one place a rung is declared; its order (tightest control to
    loosest) is every table's order (``rung_order``).
    """

    name: str
    """The rung's name (PromptPair.rung, pairs.parquet ``rung``)."""
    generator: Literal["builder", "mechanical", "seeded", "lexicon", "pairing", ""]
    """How harness.ladder.build makes its pairs from a base prompt alone: ``builder`` (the identical pair),
    ``mechanical`` (every prompt with a visible character gets them), ``seeded`` (seeded edits a prompt may not
    admit), ``lexicon`` (the shipped synonym lexicon), ``pairing`` (another base prompt of another topic);
    '' when only curated variants make it."""
    curated: bool
    """A ladder file may give curated variants on this rung (``curated: {rung: [...]}``)."""
    role: Literal["noise_floor", "negative_control", "positive_control", "perturbation"]
    """``noise_floor``: nothing changes (decoded twice): the determinism check, the gate's floor, never dropped
    by the audit; ``positive_control``: the task changes on purpose: the distances must be large there, and it is
    left out of the perturbation distance P and of the flags about small edits; ``negative_control``: an edit a
    reader cannot see, which the positive control must move more than (a perturbation like any other in P);
    ``perturbation``: every other rung."""
    changes_task: bool
    """Side b asks another question: its expected answer is unknown unless a curated variant gives one."""
    changes: str
    """What changes between the two sides, in words (the README's rung table)."""

    @property
    def order(self) -> int:
        """Position in RUNGS (tightest control first)."""
        return RUNGS.index(self.name)

    @property
    def is_noise_floor(self) -> bool:
        return self.role == "noise_floor"

    @property
    def is_positive_control(self) -> bool:
        return self.role == "positive_control"

    @property
    def is_perturbation(self) -> bool:
        """Counts in the means over small edits (P, the confidence flag): neither the noise floor nor the positive
        control."""
        return self.role in ("perturbation", "negative_control")

    @property
    def has_edit_kinds(self) -> bool:
        """Made by generated edit kinds a ladder's ``edit_kinds`` can select (harness.ladder.build.KIND_RUNG)."""
        return self.generator in ("mechanical", "seeded", "lexicon")

    @property
    def curated_only(self) -> bool:
        """Only curated variants make its pairs."""
        return self.curated and not self.generator


# Tightest control to loosest; the order is used in every table. casing, format and typo change the surface
# of the words; filler adds words that carry no task content; option_order keeps the question but moves the
# answer (a label now names another option), so it sits past paraphrase.
RUNG_TABLE: tuple[RungInfo, ...] = (
    RungInfo("identical", "builder", False, "noise_floor", False, "nothing; decoded twice, independently"),
    RungInfo("noop_format", "mechanical", False, "negative_control", False,
             "what a reader cannot see: edge spaces and newlines, a double space, a zero-width space, Unicode forms"),
    RungInfo("punctuation", "mechanical", False, "perturbation", False, "punctuation characters only"),
    RungInfo("structural", "mechanical", False, "perturbation", False, "whitespace inside the prompt"),
    RungInfo("casing", "seeded", False, "perturbation", False, "the case of letters only"),
    RungInfo("format", "seeded", False, "perturbation", False, "one choice of a structured prompt's format"),
    RungInfo("typo", "seeded", False, "perturbation", False, "letters of words of 3+ letters"),
    RungInfo("synonym", "lexicon", True, "perturbation", False, "one word or phrase for a near-equivalent"),
    RungInfo("filler", "seeded", False, "perturbation", False, "words that carry no task content added"),
    RungInfo("paraphrase", "", True, "perturbation", False, "same meaning, new phrasing"),
    RungInfo("option_order", "seeded", False, "perturbation", False,
             "the answer options of a multiple-choice prompt in another order"),
    RungInfo("semantic_small", "", True, "perturbation", True, "a small real change of the task"),
    RungInfo("positive_control", "pairing", True, "positive_control", True, "a different task or topic"),
)
RUNGS: tuple[str, ...] = tuple(r.name for r in RUNG_TABLE)
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
"""RUNGS for type checkers (a Literal cannot be built from the table; tests/ladder assert they agree)."""
_BY_NAME = {r.name: r for r in RUNG_TABLE}


def rung_info(name: str) -> RungInfo:
    """The table's row of a rung; a name that is no rung is a KeyError naming the rungs."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown rung {name!r} (expected one of {', '.join(RUNGS)})") from None


def rung_order(name: str) -> int:
    """Sort key of a rung label: its position in RUNGS; after every rung for a label that is none (``drift``)."""
    r = _BY_NAME.get(name)
    return r.order if r is not None else len(RUNGS)


def _the(role: str) -> str:
    (name,) = [r.name for r in RUNG_TABLE if r.role == role]
    return name


NOISE_FLOOR = _the("noise_floor")
"""The noise-floor rung (identical)."""
POSITIVE_CONTROL = _the("positive_control")
"""The positive-control rung."""
NEGATIVE_CONTROL = _the("negative_control")
"""The rung the positive control must move more than (noop_format)."""
CONTROL_RUNGS = tuple(r.name for r in RUNG_TABLE if not r.is_perturbation)
"""The rungs that are no small edit (the noise floor and the positive control): left out of P and of the
flags and figures about small edits."""
MECHANICAL_RUNGS = tuple(r.name for r in RUNG_TABLE if r.generator == "mechanical")
"""The rungs every prompt with a visible character gets."""
SEEDED_RUNGS = tuple(r.name for r in RUNG_TABLE if r.generator == "seeded")
"""Rungs made only by seeded edits that a prompt may not admit (no capital, no field, no option list)."""
CURATED_RUNGS = tuple(r.name for r in RUNG_TABLE if r.curated)
"""Rungs a ladder file may give curated variants on."""
TASK_CHANGING_RUNGS = tuple(r.name for r in RUNG_TABLE if r.changes_task)
"""Rungs whose side b asks another question: its expected answer is unknown unless a curated variant gives one."""
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
