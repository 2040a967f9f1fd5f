"""Splitting a reasoning scaffold from the answer.

Three forms are handled (registry ``scaffold``):
- a tag the model opens itself (``<think> ... </think>``);
- a tag the chat template already opened at the end of the generation prompt
  (``opened_by_template: true``), so the output holds only the closing tag;
- a textual preamble (``Thinking Process:``) that ends at a marker (``close``)
  or at a final-answer marker (``answer_markers``); ``close: null`` when no
  published marker says where it ends (it is then never guessed).
A scaffold that never closes is "unclosed": its answer span is empty, because
nothing after it is known to be the answer.
"""

from __future__ import annotations

from typing import Callable, Sequence

from harness.models.registry import Scaffold
from harness.score.records import ScaffoldSplit, Status


def split_text(text: str, scaffold: Scaffold | None) -> ScaffoldSplit:
    if scaffold is None:
        return ScaffoldSplit("none", 0)
    if scaffold.opened_by_template:
        body_start = 0
    else:
        stripped = len(text) - len(text.lstrip())
        if scaffold.close and text[stripped:].startswith(scaffold.close):
            # A bare closing tag first: the model emitted an empty scaffold and
            # skipped the opener (the demo think model does this off-domain).
            return ScaffoldSplit("closed", _skip_ws(text, stripped + len(scaffold.close)))
        if scaffold.open is None or not text[stripped:].startswith(scaffold.open):
            return ScaffoldSplit("absent", 0)
        body_start = stripped + len(scaffold.open)
        # A textual preamble is usually followed by its own blank line
        # ("Thinking Process:\n\n1. ..."); that blank line is not its end.
        body_start += len(text[body_start:]) - len(text[body_start:].lstrip())
    for marker in scaffold.answer_markers:
        at = text.rfind(marker, body_start)
        if at >= 0:
            return ScaffoldSplit("closed", _skip_ws(text, at + len(marker)))
    # An end that is not known is not guessed (a blank line is not the end of a
    # multi-paragraph trace): without a marker the answer span is missing.
    at = text.find(scaffold.close, body_start) if scaffold.close else -1
    if at < 0:
        return ScaffoldSplit("unclosed", len(text))
    return ScaffoldSplit("closed", _skip_ws(text, at + len(scaffold.close)))


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def answer_start_token(gen_ids: Sequence[int], decode: Callable[[list[int]], str], scaffold: Scaffold | None) -> tuple[Status, int]:
    """(status, index of the first answer token); the index is len(gen_ids) when the answer is empty.

    The split is found on the text, then mapped back to tokens as the shortest
    prefix whose decoded text reaches the answer's first character: decoding is
    prefix-monotone for byte-level tokenizers, so a binary search suffices.
    """
    ids = list(gen_ids)
    text = decode(ids)
    split = split_text(text, scaffold)
    if split.status in ("none", "absent") or split.answer_char == 0:
        return split.status, 0
    if split.answer_char >= len(text):
        return split.status, len(ids)
    # Smallest k whose prefix ids[:k] decodes to at least the scaffold and the
    # whitespace after it; a token straddling the boundary stays with the scaffold.
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= split.answer_char:
            hi = mid
        else:
            lo = mid + 1
    return split.status, lo
