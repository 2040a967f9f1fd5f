"""Mechanical edits (no-op formatting, punctuation, structural), each seeded from a stable key.

Every edit draws its random choices from ``random.Random(seed_for(key))`` where
the key is (ladder, prompt id, rung, edit kind): the same input yields the same
ladder on every machine and Python version, and adding a prompt never changes
the edits of another (HELM-style per-instance seeding).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable


def seed_for(*key: str) -> int:
    """64-bit seed from a key; sha256 so it is stable across processes (``hash()`` is salted)."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class NotApplicable(Exception):
    """The edit has nothing to act on in this prompt (e.g. no comma)."""


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_SINGLE_SPACE = re.compile(r"(?<=\S) (?=\S)")


def _pick(rng: random.Random, items: list):
    if not items:
        raise NotApplicable("nothing to edit")
    return items[rng.randrange(len(items))]


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
    ends = [m.end() for m in re.finditer(r"[.!?](?= \S)", text)]
    if not ends:
        return text + "\n\n"
    at = _pick(rng, ends)
    return _replace_span(text, at, at + 1, "\n\n")


def double_space(text: str, rng: random.Random) -> str:
    m = _pick(rng, list(_SINGLE_SPACE.finditer(text)))
    return _replace_span(text, m.start(), m.end(), "  ")


def zero_width_space(text: str, rng: random.Random) -> str:
    m = _pick(rng, list(_WORD.finditer(text)))
    return _replace_span(text, m.end(), m.end(), "\u200b")


# Compatibility forms that NFKC maps back to ASCII: the fullwidth block is
# U+FF01..U+FF5E for ASCII 0x21..0x7E.
def nfkc_fullwidth(text: str, rng: random.Random) -> str:
    """One letter swapped for its fullwidth form; NFKC of the result is the original."""
    spots = [i for i, ch in enumerate(text) if ch.isascii() and ch.isalpha()]
    i = _pick(rng, spots)
    return _replace_span(text, i, i + 1, chr(ord(text[i]) - 0x21 + 0xFF01))


def nfd_decomposed(text: str, rng: random.Random) -> str:
    """Canonical decomposition: visible text unchanged; applicable only to precomposed characters."""
    out = unicodedata.normalize("NFD", text)
    if out == text:
        raise NotApplicable("no precomposed character to decompose")
    return out


# --- punctuation -----------------------------------------------------------

def duplicated_period(text: str, rng: random.Random) -> str:
    spots = [m.start() for m in re.finditer(r"(?<!\.)\.(?!\.)", text)]
    i = _pick(rng, spots)
    return _replace_span(text, i, i + 1, "..")


def comma_to_semicolon(text: str, rng: random.Random) -> str:
    spots = [m.start() for m in re.finditer(",", text)]
    i = _pick(rng, spots)
    return _replace_span(text, i, i + 1, ";")


def comma_inserted(text: str, rng: random.Random) -> str:
    """A comma directly after a word that is followed by a space (not at the end)."""
    spots = [m.end() for m in _WORD.finditer(text) if text[m.end() : m.end() + 1] == " "]
    i = _pick(rng, spots)
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


def parenthesized_word(text: str, rng: random.Random) -> str:
    m = _pick(rng, list(_WORD.finditer(text)))
    return _replace_span(text, m.start(), m.end(), f"({m.group()})")


# --- structural: the shape of the token sequence changes ------------------

def newline_in_sentence(text: str, rng: random.Random) -> str:
    m = _pick(rng, list(_SINGLE_SPACE.finditer(text)))
    return _replace_span(text, m.start(), m.end(), "\n")


def whitespace_run(text: str, rng: random.Random) -> str:
    m = _pick(rng, list(_SINGLE_SPACE.finditer(text)))
    return _replace_span(text, m.start(), m.end(), " \t  ")


@dataclass(frozen=True)
class EditKind:
    rung: str
    name: str
    apply: Callable[[str, random.Random], str]


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
    EditKind("punctuation", "duplicated_period", duplicated_period),
    EditKind("punctuation", "comma_to_semicolon", comma_to_semicolon),
    EditKind("punctuation", "comma_inserted", comma_inserted),
    EditKind("punctuation", "final_question", final_question),
    EditKind("punctuation", "final_colon", final_colon),
    EditKind("punctuation", "parenthesized_word", parenthesized_word),
    EditKind("structural", "newline_in_sentence", newline_in_sentence),
    EditKind("structural", "whitespace_run", whitespace_run),
)


def apply_edit(kind: EditKind, text: str, *, ladder: str, prompt_id: str) -> str:
    """Apply one edit with its stable seed; raises NotApplicable when it has nothing to act on."""
    rng = random.Random(seed_for(ladder, prompt_id, kind.rung, kind.name))
    return kind.apply(text, rng)
