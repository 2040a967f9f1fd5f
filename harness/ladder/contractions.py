"""Contraction and expansion ("do not" <-> "don't"): two generated kinds of the synonym rung.

The phrases come from ``ladders/contractions.yaml`` (written for this project;
its header says which phrases go only one way and why). Case follows the
phrase it replaces (``Do not`` -> ``Don't``, ``DO NOT`` -> ``DON'T``) and a
prompt written with typographic apostrophes keeps them.
"""

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
from harness.ladder.textspans import EditKind, NotApplicable, first_change, pick, protected_spans, replace_span
from harness.core.yaml_strict import load_yaml_strict
from harness.core.resources import data_path

DEFAULT_CONTRACTIONS = data_path("ladders", "contractions.yaml")
_SECTIONS = ("both", "contract_only", "expand_only")
_PHRASE = re.compile(r"[a-z]+(?: [a-z]+)*")
_CONTRACTED = re.compile(r"[a-z]+'[a-z]+(?: [a-z]+)*")
_APOSTROPHES = "'\u2019"


@dataclass(frozen=True)
class ContractionLexicon:
    source: str
    contract: Mapping[str, str]
    """Expanded phrase -> contracted form, for the phrases that may be contracted (lowercase, ASCII apostrophe)."""
    expand: Mapping[str, str]
    """Contracted form -> expanded phrase, for the forms that may be expanded."""


def load_contractions(path: Path | str = DEFAULT_CONTRACTIONS) -> ContractionLexicon:
    return _load(_resolved(str(path), os.getcwd()))


@lru_cache(maxsize=16)  # every prompt's contraction and expansion edits load the default: resolve it once
def _resolved(path: str, cwd: str) -> str:
    return str(Path(path).resolve())


@lru_cache(maxsize=4)
def _load(path: str) -> ContractionLexicon:
    raw = load_yaml_strict(Path(path))
    if not isinstance(raw, dict) or set(raw) - {"lexicon", "version", *_SECTIONS}:
        raise InputError(path, "(top level)", f"expected a mapping with {', '.join(_SECTIONS)}: {{expanded: contracted}}")
    contract: dict[str, str] = {}
    expand: dict[str, str] = {}
    seen: set[str] = set()
    for section in _SECTIONS:
        entries = raw.get(section) or {}
        if not isinstance(entries, dict):
            raise InputError(path, section, "expected a mapping {expanded phrase: contracted form}")
        for full, short in entries.items():
            where = f"{section}.{full}"
            if not isinstance(full, str) or not _PHRASE.fullmatch(full):
                raise InputError(path, where, "a key must be lowercase words separated by single spaces")
            if not isinstance(short, str) or not _CONTRACTED.fullmatch(short):
                raise InputError(path, where, f"expected a lowercase contraction with an ASCII apostrophe, got {short!r}")
            if full in seen or short in seen:
                raise InputError(path, where, "listed twice")
            seen |= {full, short}
            if section != "expand_only":
                contract[full] = short
            if section != "contract_only":
                expand[short] = full
    return ContractionLexicon(path, MappingProxyType(contract), MappingProxyType(expand))


def _cased(source: str, target: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def _phrase_pattern(phrases: list[str]) -> re.Pattern:
    if not phrases:
        return re.compile(r"(?!)")
    # Longest first, so "i have been" wins over a shorter overlap; words joined by exactly one space.
    alts = "|".join(re.escape(p).replace("'", f"[{_APOSTROPHES}]") for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w'\u2019-])(?:{alts})(?![\w'\u2019-])", re.IGNORECASE)


def _patterns(lex: ContractionLexicon) -> tuple[re.Pattern, re.Pattern]:
    return _compiled(tuple(lex.contract)), _compiled(tuple(lex.expand))


@lru_cache(maxsize=16)
def _compiled(phrases: tuple[str, ...]) -> re.Pattern:
    return _phrase_pattern(list(phrases))


def _matches(text: str, rx: re.Pattern) -> list[re.Match]:
    guarded = protected_spans(text)
    return [m for m in rx.finditer(text) if not any(s < m.end() and m.start() < e for s, e in guarded)]


def contraction_edit(text: str, rng: random.Random, lexicon: ContractionLexicon | None = None) -> str:
    """One phrase of the lexicon contracted ("do not" -> "don't"), only when a word follows it."""
    lex = lexicon or load_contractions()
    rx, _ = _patterns(lex)
    spots = [m for m in _matches(text, rx) if re.match(r" [^\W\d_]", text[m.end() : m.end() + 2])]
    m = pick(rng, spots, "no contractible phrase (do not, it is, ...) followed by a word")
    short = lex.contract[m.group().lower()]
    if "\u2019" in text and "'" not in text:
        short = short.replace("'", "\u2019")
    return replace_span(text, m.start(), m.end(), _cased(m.group(), short))


def expansion_edit(text: str, rng: random.Random, lexicon: ContractionLexicon | None = None) -> str:
    """One contraction of the lexicon written out ("don't" -> "do not"); ambiguous ones ("it's") never."""
    lex = lexicon or load_contractions()
    _, rx = _patterns(lex)
    m = pick(rng, _matches(text, rx), "no expandable contraction (don't, I'm, ...; it's and he's are ambiguous)")
    key = m.group().lower().replace("\u2019", "'")
    return replace_span(text, m.start(), m.end(), _cased(m.group(), lex.expand[key]))


def contraction(text: str, rng: random.Random) -> str:
    return contraction_edit(text, rng)


def expansion(text: str, rng: random.Random) -> str:
    return expansion_edit(text, rng)


CONTRACTION_KINDS: tuple[EditKind, ...] = (
    EditKind("synonym", "contraction", contraction, first_change),
    EditKind("synonym", "expansion", expansion, first_change),
)
