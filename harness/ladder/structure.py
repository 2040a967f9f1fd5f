"""Reading the structure of a prompt with fields or lists: what the format and option-order edits act on.

A *field* is a line ``Name: value`` (one to three ASCII words, a colon that
does not start ``//``); a *list* is two or more consecutive lines that open
with a label: an enumeration (``1.``, ``(b)``, ``[iii]``, ``D)`` ...) whose
labels count up from the first label of one style, or a bullet (``-``,
``*``, ``•``) repeated. Prompts with carriage returns are not read (their
line structure is ambiguous).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from harness.ladder.textspans import is_mark

WRAPPERS: tuple[str, ...] = ("{}.", "{})", "({})", "[{}]", "<{}>", "{} -")
"""How a label is written around its enumerator (FormatSpread's item wrappers)."""
STYLES: tuple[str, ...] = ("number", "upper", "lower", "upper_roman", "lower_roman")
"""Enumeration styles of a labelled list; ``bullet`` lists have no enumerator."""
BULLETS = "-*\u2022"
MAX_ITEMS = 39
"""Longest list read (XXXIX in roman numerals)."""

_FIELD = re.compile(r"(?P<name>[A-Za-z]+(?: [A-Za-z]+){0,2})(?P<sep>[ \t]*:(?!//)[ \t]*)(?P<value>.*)")
_ENUM = r"(?P<x>[0-9]{1,2}|[A-Za-z]|[ivxlIVXL]{1,7})"
_WRAPPER_RX = [(w, re.compile(r"(?P<indent>[ \t]*)" + re.escape(w).replace(r"\{\}", _ENUM) + r"(?P<gap>[ \t]+)(?P<text>\S.*)"))
               for w in WRAPPERS]
_BULLET_RX = re.compile(rf"(?P<indent>[ \t]*)(?P<x>[{re.escape(BULLETS)}])(?P<gap>[ \t]+)(?P<text>\S.*)")


def _roman(n: int) -> str:
    out = ""
    for value, sym in ((40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + sym, n - value
    return out


def enumerator(style: str, i: int) -> str:
    """The ``i``-th (0-based) enumerator of a style."""
    if style == "number":
        return str(i + 1)
    if style in ("upper", "lower"):
        letter = chr(ord("A") + i)
        return letter if style == "upper" else letter.lower()
    roman = _roman(i + 1)
    return roman if style == "upper_roman" else roman.lower()


@dataclass(frozen=True)
class Field:
    line: int
    name: str
    sep: str
    value: str


@dataclass(frozen=True)
class Item:
    line: int
    indent: str
    label: str
    """The enumerator alone ("B", "3", "ii") or the bullet character."""
    gap: str
    text: str


@dataclass(frozen=True)
class ItemList:
    items: tuple[Item, ...]
    style: str
    """One of STYLES, or ``bullet``."""
    wrapper: str
    """One of WRAPPERS; ``{}`` for a bullet list."""

    @property
    def lines(self) -> range:
        return range(self.items[0].line, self.items[-1].line + 1)


@dataclass(frozen=True)
class Structure:
    lines: tuple[str, ...]
    fields: tuple[Field, ...]
    lists: tuple[ItemList, ...]


def _match(rx: re.Pattern, line: str, text_group: str) -> re.Match | None:
    # A value or item text never opens with a combining mark: the mark would sit on the separator or label.
    m = rx.fullmatch(line)
    return m if m and not is_mark(m[text_group][:1] or "a") else None


def _labelled(line: str) -> list[tuple[str, re.Match]]:
    return [(w, m) for w, rx in _WRAPPER_RX if (m := _match(rx, line, "text"))]


def _style_of(labels: list[str]) -> str | None:
    for style in STYLES:
        if labels == [enumerator(style, i) for i in range(len(labels))]:
            return style
    return None


def _lists(lines: list[str], taken: set[int]) -> list[ItemList]:
    out: list[ItemList] = []
    i = 0
    while i < len(lines):
        best: ItemList | None = None
        for wrapper, _ in _labelled(lines[i]) if i not in taken else []:
            run: list[Item] = []
            j = i
            while j < len(lines) and j not in taken:
                m = next((m for w, m in _labelled(lines[j]) if w == wrapper), None)
                if m is None:
                    break
                run.append(Item(j, m["indent"], m["x"], m["gap"], m["text"]))
                j += 1
            # the longest prefix that counts up in one style
            while len(run) >= 2 and _style_of([it.label for it in run]) is None:
                run.pop()
            if 2 <= len(run) <= MAX_ITEMS and (best is None or len(run) > len(best.items)):
                best = ItemList(tuple(run), _style_of([it.label for it in run]) or "", wrapper)
        if best is None and i not in taken and (m := _match(_BULLET_RX, lines[i], "text")):
            run = []
            j = i
            while j < len(lines) and (mj := _match(_BULLET_RX, lines[j], "text")) and mj["x"] == m["x"]:
                run.append(Item(j, mj["indent"], mj["x"], mj["gap"], mj["text"]))
                j += 1
            if len(run) >= 2:
                best = ItemList(tuple(run), "bullet", "{}")
        if best is None:
            i += 1
            continue
        out.append(best)
        i = best.items[-1].line + 1
    return out


@lru_cache(maxsize=64)  # every format and filler kind of one prompt reads the same (frozen) structure
def parse_structure(text: str) -> Structure:
    """Fields and lists of a prompt (either may be empty)."""
    if "\r" in text:
        return Structure(tuple(text.split("\n")), (), ())
    lines = text.split("\n")
    lists = _lists(lines, set())
    in_list = {i for lst in lists for i in lst.lines}
    fields = []
    for i, line in enumerate(lines):
        if i not in in_list and (m := _match(_FIELD, line, "value")):
            fields.append(Field(i, m["name"], m["sep"], m["value"]))
    return Structure(tuple(lines), tuple(fields), tuple(lists))


def item_line(item: Item, label: str, wrapper: str) -> str:
    return item.indent + (label if wrapper == "{}" else wrapper.format(label)) + item.gap + item.text
