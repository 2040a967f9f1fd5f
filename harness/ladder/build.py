"""Base prompts + curated variants -> every rung's pairs."""

from __future__ import annotations

import dataclasses
import gc
import random
import re
import unicodedata

from harness.ladder.records import AnswerSpec
from harness.ladder.edits import EDIT_KINDS, EditKind, NotApplicable, apply_edit, seed_for
from harness.ladder.options import option_labels, reorder_options
from harness.ladder.pairing import UnrelatedIndex, content_words, unrelated
from harness.ladder.records import (
    CURATED_RUNGS,
    NOISE_FLOOR,
    RUNG_TABLE,
    TASK_CHANGING_RUNGS,
    BasePrompt,
    Ladder,
    PromptPair,
    PromptSet,
    SkippedEdit,
    rung_info,
)
from harness.ladder.synonyms import LEXICON_EDIT_KIND, Lexicon, apply_synonym

LEXICON_RUNG = next(r.name for r in RUNG_TABLE if r.generator == "lexicon")
"""The rung the shipped lexicon's edits are on (synonym)."""
GENERATED_KINDS: tuple[str, ...] = tuple(k.name for k in EDIT_KINDS) + (LEXICON_EDIT_KIND,)
"""Every name a ladder's ``edit_kinds`` may list."""
KIND_RUNG: dict[str, str] = {k.name: k.rung for k in EDIT_KINDS} | {LEXICON_EDIT_KIND: LEXICON_RUNG}
"""The rung of every generated edit kind (the one definition: the gate reads it from here)."""
MAX_PAIRS_PER_KIND = 20


def resolve_kinds(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Edit kind names, where a rung name stands for all its generated kinds; in EDIT_KINDS order.

    Raises ValueError naming the first unknown name.
    """
    wanted: set[str] = set()
    for name in names:
        if name in KIND_RUNG:
            wanted.add(name)
        elif name in KIND_RUNG.values():
            wanted |= {k for k, r in KIND_RUNG.items() if r == name}
        else:
            rungs = ", ".join(dict.fromkeys(KIND_RUNG.values()))
            raise ValueError(f"unknown edit kind or rung {name!r} (rungs: {rungs}; kinds: {', '.join(GENERATED_KINDS)})")
    return tuple(k for k in GENERATED_KINDS if k in wanted)

# The pairing lives in its own module; these names stay importable from here.
_content_words = content_words
_unrelated = unrelated
_UnrelatedIndex = UnrelatedIndex


def build_pairs(
    ladder: str,
    prompts: list[BasePrompt],
    curated: dict[str, dict[str, list[tuple[str, str, str]]]],
    edit_kinds: tuple[str, ...] | None = None,
    lexicon: Lexicon | None = None,
    pairs_per_kind: int = 1,
) -> tuple[list[PromptPair], list[SkippedEdit]]:
    """All pairs of a ladder.

    ``curated[prompt_id][rung]`` is a list of (text, edit_kind, note[, answer]). A prompt
    without a curated synonym gets one from the lexicon; one without a curated
    positive control is paired with the least related base prompt of another
    topic. Each seeded kind (and the lexicon) makes up to ``pairs_per_kind``
    pairs per prompt, one per draw; every edit that could not be made, and
    every draw that repeated an earlier one, is returned as a SkippedEdit.
    """
    pairs: list[PromptPair] = []
    skipped: list[SkippedEdit] = []
    wanted = set(GENERATED_KINDS if edit_kinds is None else edit_kinds)
    index: _UnrelatedIndex | None = None  # built on first use: a fully curated ladder never pairs
    for at, p in enumerate(prompts):
        first = len(pairs)
        # The noise floor: the prompt against itself (its edit kind is the rung's name).
        pairs.append(PromptPair(f"{p.id}/{NOISE_FLOOR}/{NOISE_FLOOR}", p.id, NOISE_FLOOR, NOISE_FLOOR, p.text, p.text,
                                "generated"))
        for kind in EDIT_KINDS:
            if kind.name in wanted:
                pairs += _seeded_pairs(ladder, p, kind, pairs_per_kind, skipped)
        mine = curated.get(p.id, {})
        for rung in CURATED_RUNGS:
            variants = mine.get(rung, [])
            taken = {q.pair_id for q in pairs[first:]}
            for n, (text, edit_kind, note, *answer) in enumerate(variants):
                suffix = edit_kind if len(variants) == 1 else f"{edit_kind}-{n + 1}"
                pair_id = f"{p.id}/{rung}/{suffix}"
                if pair_id in taken:  # a curated label that is also a generated kind's name
                    pair_id += "-curated"
                pair = PromptPair(pair_id, p.id, rung, edit_kind, p.text, text, "curated", note)
                pairs.append(_with_answers(pair, p.expected, answer[0] if answer and answer[0] is not None else None))
            if variants:
                continue
            generator = rung_info(rung).generator
            if generator == "lexicon" and LEXICON_EDIT_KIND in wanted:
                pairs += _lexicon_pairs(ladder, p, lexicon, pairs_per_kind, skipped)
            elif generator == "pairing":
                index = index or _UnrelatedIndex(prompts)
                pairs += _paired_control(ladder, p, index.pick(ladder, at), skipped)
        if p.expected is not None:
            pairs[first:] = [q if q.origin == "curated" else _with_answers(q, p.expected, _moved_answer(ladder, p, q))
                             for q in pairs[first:]]
    return pairs, skipped


def _with_answers(pair: PromptPair, expected: AnswerSpec | None, answer_b: str | None) -> PromptPair:
    """``pair`` with its sides' expected answers: side b's is ``answer_b``, else side a's unless the task changed."""
    if expected is None:
        return pair
    if answer_b is None and pair.rung not in TASK_CHANGING_RUNGS:
        answer_b = expected.answer
    elif answer_b == UNKNOWN_CHOICE:
        answer_b = None
    return dataclasses.replace(pair, answer_a=expected.answer, answer_b=answer_b, check=expected.check,
                               tolerance=expected.tolerance)


def _moved_answer(ladder: str, p: BasePrompt, pair: PromptPair) -> str | None:
    """Where an edit moved a choice answer: option_order (the same seeded draw as the edit), or an edit that
    relabels the options (``A.`` -> ``I.``: the label at the same position); None when nothing moved it."""
    if p.expected is None or p.expected.check != "choice":
        return None
    if pair.rung != "option_order":
        return _relabelled(p.text, pair, p.expected.answer)
    draw = pair.pair_id.rsplit("-", 1)[-1] if pair.pair_id.rsplit("/", 1)[-1] != pair.edit_kind else "1"
    key = (ladder, p.id, pair.rung, pair.edit_kind) + (() if draw == "1" else (draw,))
    moved = reorder_options(p.text, random.Random(seed_for(*key)), answer=p.expected.answer)
    # The edit and this call draw the same permutation from the same seed: the texts must agree.
    assert moved.text == pair.prompt_b, f"option_order answer out of step with the edit of {pair.pair_id}"
    return moved.answer


UNKNOWN_CHOICE = "?"
"""Side b's choice answer when an edit relabelled the options with something not a letter (I, II, ...): no
letter names the option, so side b's expected answer is unknown (None: its correctness is missing, never 0)."""


def _relabelled(text: str, pair: PromptPair, answer: str) -> str | None:
    before, after = option_labels(text), option_labels(pair.prompt_b)
    if not before or before == after:
        return None
    if len(after) != len(before):
        # The options are no longer recognised as such (i. ii. iii. without an Options: header): the answer
        # stands only if every old label still opens a line ("B." / "(B)"); otherwise it is unknown.
        visible = re.sub("[\u200b\u200c\u200d\u2060\ufeff]", "", unicodedata.normalize("NFKC", pair.prompt_b))
        starts = {ln.strip().lstrip("(").split(".")[0].split(")")[0] for ln in visible.split("\n")}
        return None if all(b in starts for b in before) else UNKNOWN_CHOICE
    new = after[[b.upper() for b in before].index(answer)]
    return new.upper() if len(new) == 1 and new.isalpha() else UNKNOWN_CHOICE


def _draws(make, n: int, where: tuple[str, str, str], skipped: list[SkippedEdit]) -> list[tuple[int, str, str]]:
    """(draw, text, note) of up to ``n`` distinct draws; ``make(draw)`` returns (text, note) or raises NotApplicable."""
    prompt_id, rung, kind = where
    out: list[tuple[int, str, str]] = []
    for draw in range(1, n + 1):
        try:
            text, note = make(draw)
        except NotApplicable as why:
            if draw == 1:
                skipped.append(SkippedEdit(prompt_id, rung, kind, str(why)))
                return out
            skipped.append(SkippedEdit(prompt_id, rung, kind, f"draw {draw}: {why}"))
            continue
        if any(text == t for _, t, _ in out):
            skipped.append(SkippedEdit(prompt_id, rung, kind, f"draw {draw} repeats an earlier draw (fewer distinct edits than pairs per kind)"))
            continue
        out.append((draw, text, note))
    return out


def _pair_id(prompt_id: str, rung: str, kind: str, draw: int) -> str:
    return f"{prompt_id}/{rung}/{kind}" + ("" if draw == 1 else f"-{draw}")


def _seeded_pairs(ladder: str, p: BasePrompt, kind: EditKind, n: int, skipped: list[SkippedEdit]) -> list[PromptPair]:
    def make(draw: int) -> tuple[str, str]:
        b = apply_edit(kind, p.text, ladder=ladder, prompt_id=p.id, draw=draw)
        return b, kind.describe(p.text, b) if kind.describe else ""

    return [PromptPair(_pair_id(p.id, kind.rung, kind.name, d), p.id, kind.rung, kind.name, p.text, b, "generated", note)
            for d, b, note in _draws(make, n, (p.id, kind.rung, kind.name), skipped)]


def _lexicon_pairs(ladder: str, p: BasePrompt, lexicon: Lexicon | None, n: int, skipped: list[SkippedEdit]) -> list[PromptPair]:
    def make(draw: int) -> tuple[str, str]:
        edit = apply_synonym(p.text, ladder=ladder, prompt_id=p.id, lexicon=lexicon, draw=draw)
        return edit.text, edit.note

    return [PromptPair(_pair_id(p.id, "synonym", LEXICON_EDIT_KIND, d), p.id, "synonym", LEXICON_EDIT_KIND, p.text, b,
                       "generated", note)
            for d, b, note in _draws(make, n, (p.id, "synonym", LEXICON_EDIT_KIND), skipped)]


def _paired_control(ladder: str, p: BasePrompt, q: BasePrompt | None, skipped: list[SkippedEdit]) -> list[PromptPair]:
    if q is None:
        skipped.append(SkippedEdit(p.id, "positive_control", "unrelated_prompt", "no prompt of another topic (with different words)"))
        return []
    about = f"paired with {q.id}" + ("" if q.topic == q.id else f" (topic {q.topic})")
    return [PromptPair(f"{p.id}/positive_control/unrelated_prompt", p.id, "positive_control", "unrelated_prompt",
                       p.text, q.text, "paired", about)]


def build_ladder(prompt_set: PromptSet, lexicon: Lexicon | None = None) -> Ladder:
    """The ladder of a prompt set: a pure function of the set (and the lexicon)."""
    curated = {
        pid: {rung: [(v.text, v.edit_kind, v.note, v.answer) for v in variants] for rung, variants in rungs.items()}
        for pid, rungs in prompt_set.curated.items()
    }
    # Millions of pairs and no reference cycles among them: the cyclic collector's passes over the growing heap
    # reclaimed nothing and cost about a tenth of building a 100,000-prompt ladder.
    collecting = gc.isenabled()
    gc.disable()
    try:
        pairs, skipped = build_pairs(prompt_set.name, list(prompt_set.prompts), curated, prompt_set.edit_kinds,
                                     lexicon, prompt_set.pairs_per_kind)
    finally:
        if collecting:
            gc.enable()
    return Ladder(prompt_set.name, prompt_set.source, prompt_set.source_sha256, prompt_set.prompts, tuple(pairs),
                  tuple(skipped), prompt_set.edit_kinds, prompt_set.pairs_per_kind)
