"""Letter-level edits: the ``casing`` and ``typo`` rungs (HELM's lowercase and misspellings, fmeval's butter finger).

Both act only on free words (``textspans.free_words``: never inside a URL,
number, code or quote; typos and ``word_uppercased`` never in half of a
compound or contraction either). A typo never touches a letter that carries
a combining mark and a case change keeps the mark where it was, so an accent
always stays on its own letter.

- ``casing``: only the case of letters changes (``lowercase_all``,
  ``first_letter_lowercased``, ``word_uppercased``). Characters whose case
  mapping is not one character (``ß`` -> ``SS``, ``İ`` -> ``i̇``) are never
  touched, so the text keeps its length and its combining sequences.
- ``typo``: one or two ASCII letters of words of three letters or more are
  replaced by a neighbour on a QWERTY keyboard (case kept), or one letter
  is dropped (inside a word of four or more, never its first) or doubled.
"""

from __future__ import annotations

import random
from functools import lru_cache

from harness.ladder.textspans import EditKind, NotApplicable, Span, first_change, free_words, is_mark, pick, replace_span

TYPO_MIN_WORD = 3
"""Shorter words ("a", "is") become other words when one letter changes."""

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours() -> dict[str, str]:
    # Same row left/right, and the keys above and below that touch the key (staggered rows).
    pos = {ch: (r, c) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    out = {}
    for ch, (r, c) in pos.items():
        near = []
        for dr, dcs in ((0, (-1, 1)), (-1, (0, 1)), (1, (-1, 0))):
            for dc in dcs:
                rr, cc = r + dr, c + dc
                if 0 <= rr < len(_ROWS) and 0 <= cc < len(_ROWS[rr]):
                    near.append(_ROWS[rr][cc])
        out[ch] = "".join(near)
    return out


KEYBOARD_NEIGHBOURS: dict[str, str] = _neighbours()
"""Lowercase letter -> the letters of the keys next to it on a QWERTY keyboard."""


def _recase(text: str, spans: list[Span], how: str) -> str:
    chars = list(text)
    for w in spans:
        for i in range(w.start, w.end):
            new = chars[i].lower() if how == "lower" else chars[i].upper()
            if len(new) == 1:
                chars[i] = new
    return "".join(chars)


# --- casing ------------------------------------------------------------------

def lowercase_all(text: str, rng: random.Random) -> str:
    """Every free word in lowercase (URLs, codes, quotes keep their case)."""
    out = _recase(text, free_words(text, glued=True), "lower")
    if out == text:
        raise NotApplicable("no capital letter outside URLs, numbers, code and quotes")
    return out


def first_letter_lowercased(text: str, rng: random.Random) -> str:
    """The prompt's first word starts lowercase ("explain why ..."), as typed in a hurry.

    Only when that word is the first visible thing of the prompt and is
    Capitalized: a word in capitals ("NASA") is an acronym, not a sentence start.
    """
    words = free_words(text)
    if not words or text[: words[0].start].strip():
        raise NotApplicable("the prompt does not start with a word")
    w = words[0]
    first = w.text[0]
    if not first.isupper() or len(first.lower()) != 1 or first.lower() == first:  # "𝓐" has no lowercase
        raise NotApplicable("the first word does not start with a capital letter")
    if sum(not is_mark(c) for c in w.text) > 1 and w.text.isupper():
        raise NotApplicable("the first word is in capitals (an acronym)")
    return replace_span(text, w.start, w.start + 1, first.lower())


def word_uppercased(text: str, rng: random.Random) -> str:
    """One word of two letters or more in capitals ("Explain WHY the sky ...")."""
    spots = [w for w in free_words(text) if sum(not is_mark(c) for c in w.text) >= 2
             and all(len(c.upper()) == 1 for c in w.text) and w.text.upper() != w.text]
    w = pick(rng, spots, "no word of two letters or more that is not already in capitals")
    return replace_span(text, w.start, w.end, w.text.upper())


# --- typos -------------------------------------------------------------------

@lru_cache(maxsize=64)  # the four typo kinds of one prompt read the same spots
def _typo_spots(text: str, min_len: int, skip_first: bool = False) -> tuple[int, ...]:
    """Positions of ASCII letters inside free words of ``min_len`` letters or more, not followed by a mark."""
    spots = []
    for w in free_words(text):
        if len(w.text) < min_len:
            continue
        for i in range(w.start + (1 if skip_first else 0), w.end):
            if text[i].isascii() and text[i].isalpha() and not (i + 1 < len(text) and is_mark(text[i + 1])):
                spots.append(i)
    return tuple(spots)


def _neighbour(ch: str, rng: random.Random) -> str:
    new = pick(rng, KEYBOARD_NEIGHBOURS[ch.lower()])
    return new.upper() if ch.isupper() else new


def _keyboard(text: str, rng: random.Random, n: int) -> str:
    spots = _typo_spots(text, TYPO_MIN_WORD)
    if len(spots) < n:
        raise NotApplicable(f"fewer than {n} ASCII letters in words of {TYPO_MIN_WORD}+ letters outside URLs, numbers, code and quotes")
    for i in sorted(rng.sample(spots, n)):
        text = replace_span(text, i, i + 1, _neighbour(text[i], rng))
    return text


def keyboard_typo(text: str, rng: random.Random) -> str:
    """One letter hit on a neighbouring key ("explain" -> "explaun")."""
    return _keyboard(text, rng, 1)


def keyboard_typo_2(text: str, rng: random.Random) -> str:
    """Two letters hit on neighbouring keys (possibly in one word)."""
    return _keyboard(text, rng, 2)


def dropped_letter(text: str, rng: random.Random) -> str:
    """One letter (not a word's first) left out of a word of four letters or more ("becomes" -> "becoes")."""
    i = pick(rng, _typo_spots(text, 4, skip_first=True), "no word of 4+ ASCII letters outside URLs, numbers, code and quotes")
    return replace_span(text, i, i + 1, "")


def doubled_letter(text: str, rng: random.Random) -> str:
    """One letter typed twice ("letter" -> "lettter")."""
    i = pick(rng, _typo_spots(text, TYPO_MIN_WORD), f"no word of {TYPO_MIN_WORD}+ ASCII letters outside URLs, numbers, code and quotes")
    return replace_span(text, i, i + 1, text[i] * 2)


def _count_lowered(a: str, b: str) -> str:
    n = sum(x != y for x, y in zip(a, b))
    return f"{n} letter{'s' if n != 1 else ''} lowercased"


CASING_KINDS: tuple[EditKind, ...] = (
    EditKind("casing", "lowercase_all", lowercase_all, _count_lowered),
    EditKind("casing", "first_letter_lowercased", first_letter_lowercased, first_change),
    EditKind("casing", "word_uppercased", word_uppercased, first_change),
)
TYPO_KINDS: tuple[EditKind, ...] = (
    EditKind("typo", "keyboard_typo", keyboard_typo, first_change),
    EditKind("typo", "keyboard_typo_2", keyboard_typo_2, first_change),
    EditKind("typo", "dropped_letter", dropped_letter, first_change),
    EditKind("typo", "doubled_letter", doubled_letter, first_change),
)
