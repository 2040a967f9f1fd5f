"""Mechanical edits (no-op formatting, punctuation, structural), each seeded from a stable key.

Every edit draws its random choices from ``random.Random(seed_for(key))`` where
the key is (ladder, prompt id, rung, edit kind): the same input yields the same
ladder on every machine and Python version, and adding a prompt never changes
the edits of another (HELM-style per-instance seeding).

What each rung promises, on any Unicode prompt (tests/ladder/test_ladder_properties.py):

- ``noop_format``: a reader sees the same prompt. NFKC, then collapsing
  whitespace (zero-width spaces collapse to nothing) gives the same text.
- ``punctuation``: only punctuation characters (Unicode category P*) change.
- ``structural``: only whitespace changes.

Each rung has kinds that apply to every prompt with a visible character
(trailing_space; one of final_period_removed, duplicated_period,
final_mark_doubled and final_period_added; indented_lines), so every prompt
gets all three mechanical rungs.

``EDIT_KINDS`` also gathers the seeded kinds of the other generated rungs,
each in its own module: ``letters`` (casing, typo), ``formats`` (format),
``contractions`` (contraction and expansion, on the synonym rung),
``fillers`` (filler) and ``options`` (option_order).
"""

from __future__ import annotations

import random
import re
import unicodedata

from harness.ladder.contractions import CONTRACTION_KINDS
from harness.ladder.fillers import FILLER_KINDS
from harness.ladder.formats import FORMAT_KINDS
from harness.ladder.letters import CASING_KINDS, TYPO_KINDS
from harness.ladder.options import OPTION_KINDS
from harness.ladder.textspans import (EditKind, NotApplicable, SeededRandom, Span, is_mark, pick, seed_for, single_spaces,
                                      word_spans)

# The helpers live in textspans (shared with the word-level edits); these names stay importable from here.
__all__ = ["EDIT_KINDS", "EditKind", "NotApplicable", "Span", "apply_edit", "edit_kind", "pick", "seed_for", "word_spans"]
_is_mark = is_mark
_single_spaces = single_spaces


def _replace_span(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


# --- no-op formatting: a reader sees the same prompt -----------------------

def trailing_space(text: str, rng: random.Random) -> str:
    return text + " "


def leading_space(text: str, rng: random.Random) -> str:
    return " " + text


def leading_newline(text: str, rng: random.Random) -> str:
    return "\n" + text


def trailing_newline(text: str, rng: random.Random) -> str:
    return text + "\n"


def blank_line(text: str, rng: random.Random) -> str:
    """A blank line between two sentences, or after the prompt when it has one sentence."""
    ends = [m.end() for m in re.finditer(r"[.!?](?= \S)", text) if not _is_mark(text[m.end() + 1])]
    if not ends:
        return text + "\n\n"
    at = pick(rng, ends)
    return _replace_span(text, at, at + 1, "\n\n")


def double_space(text: str, rng: random.Random) -> str:
    m = pick(rng, _single_spaces(text), "no single space between two words")
    return _replace_span(text, m.start(), m.end(), "  ")


def zero_width_space(text: str, rng: random.Random) -> str:
    w = pick(rng, word_spans(text), "no word to follow with a zero-width space")
    return _replace_span(text, w.end, w.end, "\u200b")


# Compatibility forms that NFKC maps back to ASCII: the fullwidth block is
# U+FF01..U+FF5E for ASCII 0x21..0x7E.
def nfkc_fullwidth(text: str, rng: random.Random) -> str:
    """One letter swapped for its fullwidth form; NFKC of the result is the original."""
    spots = [i for i, ch in enumerate(text) if ch.isascii() and ch.isalpha()]
    i = pick(rng, spots, "no ASCII letter to widen")
    return _replace_span(text, i, i + 1, chr(ord(text[i]) - 0x21 + 0xFF01))


def nfd_decomposed(text: str, rng: random.Random) -> str:
    """Canonical decomposition: visible text unchanged; applicable only to precomposed characters."""
    out = unicodedata.normalize("NFD", text)
    if out == text:
        raise NotApplicable("no precomposed character to decompose")
    return out


def nfc_composed(text: str, rng: random.Random) -> str:
    """Canonical composition: the other direction, for prompts written decomposed."""
    out = unicodedata.normalize("NFC", text)
    if out == text:
        raise NotApplicable("already NFC (nothing to compose)")
    return out


# --- punctuation -----------------------------------------------------------

def duplicated_period(text: str, rng: random.Random) -> str:
    """A sentence-ending period doubled; periods inside numbers or names ("3.14", "a.b") are left alone."""
    spots = [m.start() for m in re.finditer(r"(?<!\.)\.(?=\s|$)", text)]
    i = pick(rng, spots, "no sentence-ending period")
    return _replace_span(text, i, i + 1, "..")


def comma_to_semicolon(text: str, rng: random.Random) -> str:
    spots = [m.start() for m in re.finditer(",", text)]
    i = pick(rng, spots, "no comma")
    return _replace_span(text, i, i + 1, ";")


def comma_inserted(text: str, rng: random.Random) -> str:
    """A comma directly after a word that is followed by a space (not at the end)."""
    spots = [w.end for w in word_spans(text) if text[w.end : w.end + 1] == " "]
    i = pick(rng, spots, "no word followed by a space")
    return _replace_span(text, i, i, ",")


def _final_period(text: str) -> int:
    stripped = text.rstrip()
    if not stripped.endswith(".") or stripped.endswith(".."):
        raise NotApplicable("no final period")
    return len(stripped) - 1


def final_question(text: str, rng: random.Random) -> str:
    i = _final_period(text)
    return _replace_span(text, i, i + 1, "?")


def final_colon(text: str, rng: random.Random) -> str:
    i = _final_period(text)
    return _replace_span(text, i, i + 1, ":")


# The three edits below look only at the prompt's last visible character and
# between them apply to every prompt: "." -> dropped, "?"/"!" -> doubled,
# anything else -> a period added.

def final_period_removed(text: str, rng: random.Random) -> str:
    """The final period dropped, as users often do."""
    stripped = text.rstrip()
    if not stripped.endswith("."):
        raise NotApplicable("no final period")
    if not stripped[:-1].strip():
        raise NotApplicable("the period is the whole prompt")
    return _replace_span(text, len(stripped) - 1, len(stripped), "")


def final_mark_doubled(text: str, rng: random.Random) -> str:
    """A final ``?`` or ``!`` doubled ("What is it??")."""
    stripped = text.rstrip()
    if not stripped.endswith(("?", "!")):
        raise NotApplicable("no final question or exclamation mark")
    return _replace_span(text, len(stripped), len(stripped), stripped[-1])


def final_period_added(text: str, rng: random.Random) -> str:
    """A period after the last visible character, before any trailing whitespace."""
    stripped = text.rstrip()
    if not stripped:
        raise NotApplicable("no visible character")
    if stripped.endswith((".", "?", "!")):
        raise NotApplicable("already ends with . ? or !")
    return _replace_span(text, len(stripped), len(stripped), ".")


def parenthesized_word(text: str, rng: random.Random) -> str:
    w = pick(rng, word_spans(text), "no word")
    return _replace_span(text, w.start, w.end, f"({w.text})")


# --- structural: the shape of the token sequence changes ------------------

def newline_in_sentence(text: str, rng: random.Random) -> str:
    m = pick(rng, _single_spaces(text), "no single space between two words")
    return _replace_span(text, m.start(), m.end(), "\n")


def whitespace_run(text: str, rng: random.Random) -> str:
    m = pick(rng, _single_spaces(text), "no single space between two words")
    return _replace_span(text, m.start(), m.end(), " \t  ")


def indented_lines(text: str, rng: random.Random) -> str:
    """Every non-blank line indented by four spaces (a Markdown code block).

    Needs no word boundary, so it is the structural edit a one-word prompt
    still gets; a trimming template erases it on a one-line prompt.
    """
    lines = text.split("\n")
    if not any(line.strip() for line in lines):
        raise NotApplicable("no visible line")
    return "\n".join("    " + line if line.strip() else line for line in lines)


EDIT_KINDS: tuple[EditKind, ...] = (
    EditKind("noop_format", "trailing_space", trailing_space),
    EditKind("noop_format", "leading_space", leading_space),
    EditKind("noop_format", "leading_newline", leading_newline),
    EditKind("noop_format", "trailing_newline", trailing_newline),
    EditKind("noop_format", "blank_line", blank_line),
    EditKind("noop_format", "double_space", double_space),
    EditKind("noop_format", "zero_width_space", zero_width_space),
    EditKind("noop_format", "nfkc_fullwidth", nfkc_fullwidth),
    EditKind("noop_format", "nfd_decomposed", nfd_decomposed),
    EditKind("noop_format", "nfc_composed", nfc_composed),
    EditKind("punctuation", "duplicated_period", duplicated_period),
    EditKind("punctuation", "comma_to_semicolon", comma_to_semicolon),
    EditKind("punctuation", "comma_inserted", comma_inserted),
    EditKind("punctuation", "final_question", final_question),
    EditKind("punctuation", "final_colon", final_colon),
    EditKind("punctuation", "final_period_removed", final_period_removed),
    EditKind("punctuation", "final_mark_doubled", final_mark_doubled),
    EditKind("punctuation", "final_period_added", final_period_added),
    EditKind("punctuation", "parenthesized_word", parenthesized_word),
    EditKind("structural", "newline_in_sentence", newline_in_sentence),
    EditKind("structural", "whitespace_run", whitespace_run),
    EditKind("structural", "indented_lines", indented_lines),
    *CASING_KINDS,
    *FORMAT_KINDS,
    *TYPO_KINDS,
    *CONTRACTION_KINDS,
    *FILLER_KINDS,
    *OPTION_KINDS,
)
"""Every seeded edit, in rung order (the order of every table)."""





def edit_kind(name: str) -> EditKind:
    for kind in EDIT_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(name)


def apply_edit(kind: EditKind, text: str, *, ladder: str, prompt_id: str, draw: int = 1) -> str:
    """Apply one edit with its stable seed; raises NotApplicable when it has nothing to act on.

    ``draw`` numbers the pairs of one kind on one prompt (``ladder build
    --pairs-per-kind``); the first draw's key is the one every ladder had
    before there could be more, so existing ladders keep their pairs.
    """
    key = (ladder, prompt_id, kind.rung, kind.name) + (() if draw == 1 else (str(draw),))
    return kind.apply(text, SeededRandom(*key))  # type: ignore[arg-type]  # a Random made on first draw
