"""Is an output's answer right? The checks of harness.ladder.answers, run on the answer span.

The span is the output with its scaffold removed (harness.score.scaffold),
cut at the scored length L. A side without an answer span (its scaffold never
closed) or without an expected answer has no correctness: NaN, never 0.
"""

from __future__ import annotations

import math
import re

from harness.ladder.records import AnswerSpec

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
# A letter standing alone, optionally in parentheses -- "(B)", "B.", "b" -- not a letter inside a word
# ("Berlin"); "A"/"a" and "I" followed by a lowercase word are the article and the pronoun ("A cat", "I think").
# Either case: a lower-cased prompt (casing rung) labels its options a. b. c.
_CHOICE = re.compile(r"(?<![A-Za-z0-9'])\(?([A-Za-z])\)?(?![A-Za-z0-9'])")
_WORD_USE = re.compile(r"\s+[a-z]")
_TRAILING = ".!"


def first_number(span: str) -> float | None:
    """The first decimal number in ``span`` (thousands commas allowed), or None."""
    m = _NUMBER.search(span)
    return None if m is None else float(m.group(0).replace(",", ""))


def first_choice(span: str) -> str | None:
    """The first stand-alone option letter in ``span`` (``(B)``, ``B.``, ``B``), or None."""
    for m in _CHOICE.finditer(span):
        letter = m.group(1)
        if letter in "AaI" and m.group(0) == letter and _WORD_USE.match(span, m.end()):
            continue
        return letter.upper()
    return None


def is_correct(span: str, expected: AnswerSpec) -> bool:
    """Does the answer span pass the check?"""
    kind = expected.check
    if kind == "exact":
        return span.strip().rstrip(_TRAILING).rstrip() == expected.answer.strip()
    if kind == "contains":
        return expected.answer in span
    if kind == "regex":
        return re.search(expected.answer, span) is not None
    if kind == "number":
        found = first_number(span)
        if found is None:
            return False
        return abs(found - float(expected.answer.replace(",", ""))) <= (expected.tolerance or 0.0)
    if kind == "choice":
        return first_choice(span) == expected.answer
    raise ValueError(f"unknown check {kind!r}")  # answer_spec refuses these at load


def correctness(span: str | None, expected: AnswerSpec | None) -> float:
    """1.0 / 0.0, or NaN when there is no expected answer or no answer span (``span`` None)."""
    if expected is None or span is None:
        return math.nan
    return 1.0 if is_correct(span, expected) else 0.0
