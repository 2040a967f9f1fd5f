"""The generated synonym rung: one word of a prompt swapped for a near-equivalent from the shipped lexicon."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from harness.errors import InputError
from harness.ladder.edits import NotApplicable, Span, pick, word_spans
from harness.ladder.textspans import SeededRandom
from harness.core.yaml_strict import load_yaml_strict
from harness.core.resources import data_path

DEFAULT_LEXICON = data_path("ladders", "synonyms.yaml")
LEXICON_EDIT_KIND = "lexicon"
"""``edit_kind`` of generated synonym pairs; also the name that selects them in a ladder's ``edit_kinds``."""

_KEY = re.compile(r"[a-z]+")
_VALUE = re.compile(r"[a-z]+(?:[ -][a-z]+)*")
# A word glued to these is part of a compound or contraction ("well-known",
# "don't"): swapping half of it would not be a synonym edit.
_GLUE = "-'\u2019_"


@dataclass(frozen=True)
class Lexicon:
    source: str
    words: Mapping[str, tuple[str, ...]]
    """Lowercase word -> near-equivalents, in file order."""


@dataclass(frozen=True)
class SynonymEdit:
    text: str
    """The prompt with the word replaced."""
    word: str
    replacement: str
    note: str
    """``word -> replacement``, plus the article change when one was needed."""


def load_lexicon(path: Path | str = DEFAULT_LEXICON) -> Lexicon:
    return _load_lexicon(_resolved(str(path), os.getcwd()))


@lru_cache(maxsize=16)  # every prompt's synonym edit loads the default lexicon: resolve its path once
def _resolved(path: str, cwd: str) -> str:
    return str(Path(path).resolve())


@lru_cache(maxsize=4)
def _load_lexicon(path: str) -> Lexicon:
    raw = load_yaml_strict(Path(path))
    if not isinstance(raw, dict) or set(raw) - {"lexicon", "version", "words"} or not isinstance(raw.get("words"), dict):
        raise InputError(path, "(top level)", "expected a mapping with `words: {word: [near-equivalents]}`")
    words: dict[str, tuple[str, ...]] = {}
    for key, values in raw["words"].items():
        field = f"words.{key}"
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InputError(path, field, "a key must be one lowercase word (a-z)")
        if not isinstance(values, list) or not values:
            raise InputError(path, field, "expected a non-empty list of near-equivalents")
        for i, v in enumerate(values):
            if not isinstance(v, str) or not _VALUE.fullmatch(v):
                raise InputError(path, f"{field}[{i}]", f"expected lowercase words (a-z, space, hyphen), got {v!r}")
            if v == key:
                raise InputError(path, f"{field}[{i}]", "a word is not its own synonym")
        if len(set(values)) != len(values):
            raise InputError(path, field, "repeated near-equivalent")
        words[key] = tuple(values)
    return Lexicon(path, MappingProxyType(words))


def match_case(word: str, replacement: str) -> str:
    """``replacement`` in the case pattern of ``word``: UPPER, Capitalized or as written."""
    if len(word) > 1 and word.isupper():
        return replacement.upper()
    if word[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _standalone(text: str, w: Span) -> bool:
    before = text[w.start - 1] if w.start > 0 else " "
    after = text[w.end] if w.end < len(text) else " "
    return not (before.isalnum() or before in _GLUE or after.isalnum() or after in _GLUE)


def lexicon_spans(text: str, lexicon: Lexicon) -> list[Span]:
    return [w for w in word_spans(text) if w.text.lower() in lexicon.words and _standalone(text, w)]


def _vowel_sound(word: str) -> bool:
    w = word.lower()
    if w.startswith(("uni", "use", "usu", "uti", "one", "eu")):
        return False
    if w.startswith(("hon", "hour", "heir")):
        return True
    return w[:1] in "aeiou"


_ARTICLE = re.compile(r"(?<![^\W\d_])(an?)(\s+)$", re.IGNORECASE)


def _fix_article(before: str, word: str, replacement: str) -> tuple[str, str]:
    """``a``/``an`` before the replaced word agreeing with the replacement ("an idea" -> "a notion")."""
    m = _ARTICLE.search(before)
    if not m:
        return before, ""
    old = m.group(1)
    # A one-letter "A" does not say whether the text is in capitals; the word does.
    shape = word if old.isupper() and len(word) > 1 and word.isupper() else old
    new = match_case(shape, "an" if _vowel_sound(replacement) else "a")
    if new.lower() == old.lower():
        return before, ""
    return before[: m.start(1)] + new + m.group(2), f" ({old} -> {new})"


def synonym_edit(text: str, lexicon: Lexicon, rng: random.Random) -> SynonymEdit:
    spots = lexicon_spans(text, lexicon)
    w = pick(rng, spots, f"no word of the synonym lexicon ({Path(lexicon.source).name}) in the prompt")
    replacement = match_case(w.text, pick(rng, lexicon.words[w.text.lower()]))
    before, article = _fix_article(text[: w.start], w.text, replacement)
    return SynonymEdit(before + replacement + text[w.end :], w.text, replacement, f"{w.text} -> {replacement}{article}")


def apply_synonym(text: str, *, ladder: str, prompt_id: str, lexicon: Lexicon | None = None, draw: int = 1) -> SynonymEdit:
    """The seeded synonym edit of one prompt; raises NotApplicable when no lexicon word occurs in it.

    ``draw`` > 1 adds the draw number to the key (more pairs per prompt), as ``apply_edit`` does.
    """
    rng = SeededRandom(ladder, prompt_id, "synonym", LEXICON_EDIT_KIND, *(() if draw == 1 else (str(draw),)))
    return synonym_edit(text, lexicon or load_lexicon(), rng)  # type: ignore[arg-type]  # a Random made on first draw


__all__ = ["DEFAULT_LEXICON", "LEXICON_EDIT_KIND", "Lexicon", "NotApplicable", "SynonymEdit", "apply_synonym",
           "load_lexicon", "match_case", "synonym_edit"]
