"""Expected answers of base prompts: the check kinds and their validation at load time.

A base prompt (ladder YAML, published pair file, gate neighbourhood) may carry
an expected ``answer`` and a ``check`` saying how an output's answer span is
compared with it (harness.score.answers runs the check):

- ``exact``: the span, stripped of surrounding whitespace and a final ``.``/``!``,
  equals the answer (case-sensitive: an upper-casing task is about case);
- ``contains``: the answer occurs in the span;
- ``regex``: the answer is a Python regular expression found in the span (``re.search``);
- ``number``: the first number in the span is within ``tolerance`` (default 0) of the answer;
- ``choice``: the first stand-alone letter in the span (``B``, ``(B)``, ``b.``) is the answer's letter (either case;
  an edit that relabels the options moves it to the label at the same position).

Everything a user can get wrong is found here, before anything runs: an
unknown check, a regex that does not compile, a number that is not one, a
choice that is not a letter, a tolerance on a check other than ``number``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.ladder.records import DEFAULT_CHECK, AnswerSpec

ANSWER_CHECKS: tuple[str, ...] = ("exact", "contains", "regex", "number", "choice")


class AnswerError(ValueError):
    """A bad answer spec; ``field`` is the key the user should change (answer, check or tolerance)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def answer_spec(answer: Any, check: Any = None, tolerance: Any = None) -> AnswerSpec | None:
    """The validated spec of one prompt's keys, or None when it has no answer; raises AnswerError."""
    if answer is None:
        for key, value in (("check", check), ("tolerance", tolerance)):
            if value is not None:
                raise AnswerError(key, "given without an `answer`")
        return None
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise AnswerError("answer", f"expected a string or a number (got {answer!r})")
    text = answer if isinstance(answer, str) else repr(answer) if isinstance(answer, float) else str(answer)
    if not text.strip():
        raise AnswerError("answer", "empty answer")
    kind = DEFAULT_CHECK if check is None else check
    if kind not in ANSWER_CHECKS:
        raise AnswerError("check", f"unknown check {kind!r} (expected one of {', '.join(ANSWER_CHECKS)})")
    if tolerance is not None:
        if kind != "number":
            raise AnswerError("tolerance", f"only a `number` check takes a tolerance (check is {kind!r})")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
                or tolerance < 0:
            raise AnswerError("tolerance", f"expected a finite number >= 0 (got {tolerance!r})")
        tolerance = float(tolerance)
    if kind == "regex":
        try:
            re.compile(text)
        except re.error as exc:
            raise AnswerError("answer", f"regex does not compile: {exc}") from None
    elif kind == "number":
        try:
            value = float(text.replace(",", ""))
        except ValueError:
            raise AnswerError("answer", f"not a number: {text!r} (check is 'number')") from None
        if not math.isfinite(value):
            raise AnswerError("answer", f"not a finite number: {text!r}")
    elif kind == "choice":
        if not re.fullmatch(r"\(?[A-Za-z]\)?", text.strip()):
            raise AnswerError("answer", f"a choice answer is one option letter (got {text!r})")
        text = text.strip().strip("()").upper()
    return AnswerSpec(text, kind, tolerance)
