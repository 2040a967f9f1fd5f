"""The answer checks on hand-made answer spans, one block per kind."""

import math

import pytest

from harness.ladder.answers import answer_spec
from harness.ladder.records import AnswerSpec
from harness.score.answers import correctness, is_correct


@pytest.mark.parametrize("check, answer, tol, span, ok", [
    # exact: whitespace and a final . or ! are not part of the answer; case is
    ("exact", "Paris", None, "Paris", True),
    ("exact", "Paris", None, "  Paris.\n", True),
    ("exact", "Paris", None, "paris", False),
    ("exact", "Paris", None, "Paris, France", False),
    ("exact", "HOUSE", None, "House", False),
    # contains
    ("contains", "elppa", None, "The answer is elppa.", True),
    ("contains", "elppa", None, "apple", False),
    ("contains", "Paris", None, "PARIS", False),
    # regex: re.search
    ("regex", r"\bg\b", None, "The answer is g.", True),
    ("regex", r"\bg\b", None, "garden", False),
    ("regex", r"(?<!cat )\bcat cat cat\b(?! cat)", None, "cat cat cat", True),
    ("regex", r"(?<!cat )\bcat cat cat\b(?! cat)", None, "cat cat cat cat", False),
    # number: the first number, within the tolerance
    ("number", "12", None, "12", True),
    ("number", "12", None, "The answer is 12.", True),
    ("number", "12", None, "12.0", True),
    ("number", "12", None, "13", False),
    ("number", "12", None, "7 plus 5 is 12", False),  # the first number is the one read
    ("number", "3.14", 0.01, "about 3.141", True),
    ("number", "3.14", 0.001, "about 3.1", False),
    ("number", "1234", None, "1,234 people", True),
    ("number", "-4", None, "It is -4 degrees", True),
    ("number", "12", None, "twelve", False),
    # choice: the first stand-alone option letter
    ("choice", "B", None, "B", True),
    ("choice", "B", None, "(B) Jupiter", True),
    ("choice", "B", None, "The answer is B.", True),
    ("choice", "B", None, "A cat says B", True),  # "A" before a word is the article
    ("choice", "B", None, "I think B", True),
    ("choice", "B", None, "Because of C", False),  # the B of "Because" is inside a word
    ("choice", "B", None, "C. Venus", False),
    ("choice", "B", None, "b.", True),  # a lower-cased prompt labels its options a. b. c.
    ("choice", "B", None, "a cat says c", False),
    ("choice", "A", None, "A.", True),
])
def test_checks_on_hand_made_spans(check, answer, tol, span, ok):
    assert is_correct(span, AnswerSpec(answer, check, tol)) is ok


def test_missing_is_nan_never_zero():
    spec = AnswerSpec("12", "number")
    assert math.isnan(correctness(None, spec))  # no answer span (scaffold never closed)
    assert math.isnan(correctness("12", None))  # no expected answer
    assert correctness("12", spec) == 1.0 and correctness("", spec) == 0.0


def test_spec_normalises_choice_and_number():
    assert answer_spec("(b)", "choice") == AnswerSpec("B", "choice", None)
    assert answer_spec(12, "number", 1) == AnswerSpec("12", "number", 1.0)
    assert answer_spec("Paris") == AnswerSpec("Paris", "exact", None)
    assert answer_spec(None) is None
