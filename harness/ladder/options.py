"""The ``option_order`` rung: the answer options of a multiple-choice prompt in another order (SCORE).

Only recognised options move: an enumerated list (``structure.ItemList``)
labelled with letters, or with any enumerator when the line before it is an
``Options:``/``Choices:``/``Answers:`` field (a numbered list elsewhere is
usually steps, whose order is meaning). The labels stay where they are and
the option texts move, so when a prompt carries an expected answer label its
new label is where that option went (``reorder_options(..., answer="B")``).

Not applicable when an option refers to the others' positions ("all of the
above", "both A and C"), when the prompt names one option's label outside the
list ("Is B right?"; naming all of them, as in "Answer with A, B, C or D",
is fine), or when every option has the same text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from harness.ladder.formats import labels_mentioned
from harness.ladder.structure import ItemList, item_line, parse_structure
from harness.ladder.textspans import EditKind, NotApplicable

OPTION_HEADERS = frozenset({"options", "choices", "answers", "answer options", "choose from", "candidates"})
_POSITIONAL = re.compile(r"\b(?:all|none|both|neither) of (?:the )?(?:above|below|these|those|previous|preceding|options|answers)\b"
                         r"|\b(?:above|below)\b|\b[A-Z] (?:and|or|&) [A-Z]\b", re.IGNORECASE)


@dataclass(frozen=True)
class OptionReorder:
    text: str
    """The prompt with its options in the new order."""
    answer: str | None
    """The label the expected answer has now (None when none was given)."""
    order: tuple[str, ...]
    """For each label position, the label the option there had before (``("C", "A", "B")``)."""


def _options(text: str) -> tuple[ItemList, list[str]]:
    s = parse_structure(text)
    header_lines = {f.line for f in s.fields if f.name.lower() in OPTION_HEADERS and not f.value}
    candidates = [lst for lst in s.lists if lst.style in ("upper", "lower")
                  or (lst.style != "bullet" and lst.items[0].line - 1 in header_lines)]
    if not candidates:
        raise NotApplicable("no answer options (a list labelled A. B. ... or listed under 'Options:')")
    if len(candidates) > 1:
        raise NotApplicable("more than one list of options")
    options = candidates[0]
    if any(_POSITIONAL.search(it.text) for it in options.items):
        raise NotApplicable("an option refers to the others' positions (all of the above, A and B, ...)")
    labels = [it.label for it in options.items]
    mentioned = labels_mentioned(s, [options])
    if mentioned and mentioned != set(labels):
        raise NotApplicable(f"the prompt names option(s) {', '.join(sorted(mentioned))} outside the list")
    if len({it.text for it in options.items}) < 2:
        raise NotApplicable("every option has the same text")
    return options, list(s.lines)


def reorder_options(text: str, rng: random.Random, answer: str | None = None) -> OptionReorder:
    """The options shuffled by ``rng`` into an order that changes the text; ``answer`` (a label) follows its option."""
    options, lines = _options(text)
    labels = [it.label for it in options.items]
    if answer is not None and answer not in labels:
        raise NotApplicable(f"the expected answer {answer!r} is not one of the option labels {', '.join(labels)}")
    texts = [it.text for it in options.items]
    order = list(range(len(texts)))
    for _ in range(20):
        rng.shuffle(order)
        if [texts[i] for i in order] != texts:
            break
    else:
        order = list(range(1, len(texts))) + [0]  # a rotation changes any texts that are not all equal
    for pos, src in enumerate(order):
        item = options.items[pos]
        lines[item.line] = item_line(replace(item, text=texts[src]), item.label, options.wrapper)
    new_answer = None if answer is None else labels[order.index(labels.index(answer))]
    return OptionReorder("\n".join(lines), new_answer, tuple(labels[i] for i in order))


def option_labels(text: str) -> list[str]:
    """The labels of the prompt's answer options (A, B, ...), or [] when it has none this rung would reorder."""
    try:
        options, _ = _options(text)
    except NotApplicable:
        return []
    return [it.label for it in options.items]


def option_order(text: str, rng: random.Random) -> str:
    return reorder_options(text, rng).text


def describe_order(a: str, b: str) -> str:
    """``options now in the order C A B``: the old label of the option at each position."""
    options, lines = _options(a)
    new_lines = b.split("\n")
    by_text = {it.text: it.label for it in options.items}
    moved = [by_text.get(new_lines[it.line][len(lines[it.line]) - len(it.text):], "?") for it in options.items]
    return "options now in the order " + " ".join(moved)


OPTION_KINDS: tuple[EditKind, ...] = (EditKind("option_order", "option_order", option_order, describe_order),)
