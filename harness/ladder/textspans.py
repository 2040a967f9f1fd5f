"""What every seeded edit shares: the stable seed, the spans of words, and the spans no edit may touch.

Protected spans hold text whose exact characters carry meaning the edit must
not change: URLs and e-mail addresses, every whitespace-separated token with a
digit in it (numbers, "3rd", "v1.2", "10,000"), code in backticks and quoted
text (the material a prompt asks to translate or correct is its content, not
its wording). The word-level edits (casing, typos, contractions, fillers) act
only outside them.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def seed_for(*key: str) -> int:
    """64-bit seed from a key; sha256 so it is stable across processes (``hash()`` is salted)."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class SeededRandom:
    """``random.Random(seed_for(*key))``, made on the first draw.

    Most edits never draw (a trailing space, a lowercased prompt) and many find nothing to act on: hashing
    the key and seeding a generator for each of them was a third of the cost of building a large ladder.
    Every draw goes to the same generator the eager form would have made, so the edits are the same.
    """

    __slots__ = ("_key", "_rng")

    def __init__(self, *key: str) -> None:
        self._key = key
        self._rng: random.Random | None = None

    def __getattr__(self, name: str):
        # Only reached for names the proxy lacks (every Random method): seed once, then delegate.
        if self._rng is None:
            self._rng = random.Random(seed_for(*self._key))
        return getattr(self._rng, name)


class NotApplicable(Exception):
    """The edit has nothing to act on in this prompt (e.g. no comma)."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class EditKind:
    """One seeded edit: its rung, its name (the pair's ``edit_kind``) and the function that makes it."""

    rung: str
    name: str
    apply: Callable[[str, random.Random], str]
    """``(prompt, seeded rng) -> edited prompt``; raises NotApplicable with the reason when it cannot act."""
    describe: Callable[[str, str], str] | None = field(default=None, compare=False)
    """``(prompt, edited) -> note`` for the pair (e.g. the misspelt word); None leaves the note empty."""


_LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)


def is_mark(ch: str) -> bool:
    # No combining mark lies below U+0300: most characters of most prompts skip the category lookup.
    return ch >= "\u0300" and unicodedata.category(ch)[0] == "M"


@lru_cache(maxsize=512)
def word_spans(text: str) -> tuple[Span, ...]:
    """Runs of letters, extended over the combining marks that follow them.

    A word ends after its marks, not before them: an insertion between a
    letter and its accent would split one visible character in two (and block
    NFC composition).
    """
    spans = []
    for m in _LETTERS.finditer(text):
        end = m.end()
        while end < len(text) and is_mark(text[end]):
            end += 1
        spans.append(Span(m.start(), end, text[m.start() : end]))
    return tuple(spans)  # cached: every kind of a prompt reads the same words


def pick(rng: random.Random, items: Sequence[T], why: str = "nothing to edit") -> T:
    if not items:
        raise NotApplicable(why)
    return items[rng.randrange(len(items))]


# A URL ends before trailing sentence punctuation ("see https://x.org.").
URL = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]}'\u2019]|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGIT_TOKEN = re.compile(r"\S*\d\S*")
# Address-like runs glued to other text ("a@b.cowww.x.org"): the URL and e-mail patterns above can end inside
# them, leaving a tail ("b.co") a word edit would touch; the whole run without spaces is protected.
_ADDRESS_TOKEN = re.compile(r"\S*(?:@|://|www\.)\S*")
_QUOTED = re.compile(r"`[^`]*`?|\"[^\"]*\"?|\u201c[^\u201d]*\u201d?|\u00ab[^\u00bb]*\u00bb?")


@lru_cache(maxsize=512)
def protected_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Character ranges no word-level edit may touch (URLs, address-like tokens, tokens with a digit, code, quotes).

    An opening quote without its closing one protects the rest of the prompt.
    """
    spans = [(m.start(), m.end()) for rx in (URL, _ADDRESS_TOKEN, _DIGIT_TOKEN, _QUOTED) for m in rx.finditer(text)]
    return tuple(sorted(spans))


def _inside(spans: tuple[tuple[int, int], ...], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


@lru_cache(maxsize=128)  # casing, typo and filler kinds of one prompt read the same words
def free_words(text: str, glued: bool = False) -> tuple[Span, ...]:
    """Word spans that overlap no protected span and (unless ``glued``) are not glued to a hyphen or apostrophe.

    "well-known" and "don't" are left alone by default: a typo or a case
    change in half of a compound is not the edit the rung promises (lowercasing
    the whole prompt takes them too, ``glued=True``).
    """
    guarded = protected_spans(text)
    out = []
    for w in word_spans(text):
        before = text[w.start - 1] if w.start else " "
        after = text[w.end] if w.end < len(text) else " "
        if not glued and (before in "-'\u2019_" or after in "-'\u2019_"):
            continue
        if not _inside(guarded, w.start, w.end):
            out.append(w)
    return tuple(out)


@lru_cache(maxsize=64)  # the space edits of one prompt read the same spaces
def single_spaces(text: str) -> tuple[re.Match, ...]:
    """Single spaces between two visible characters, not carrying a combining mark."""
    return tuple(m for m in _SINGLE_SPACE.finditer(text) if not is_mark(text[m.end()]))


_SINGLE_SPACE = re.compile(r"(?<=\S) (?=\S)")


def free_spaces(text: str) -> list[int]:
    """Positions of single spaces between two free words (insertions there touch nothing protected)."""
    guarded = protected_spans(text)
    return [m.start() for m in single_spaces(text) if not _inside(guarded, m.start() - 1, m.end() + 1)
            and _LETTERS.match(text, m.end()) and _LETTERS.fullmatch(text[m.start() - 1])]


def replace_span(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def first_change(a: str, b: str) -> str:
    """``old -> new`` for the whitespace-separated tokens that differ (a note a reader can check)."""
    ta, tb = a.split(), b.split()
    changes = []
    for op, i1, i2, j1, j2 in bounded_opcodes(ta, tb):
        old, new = " ".join(ta[i1:i2]), " ".join(tb[j1:j2])
        if op != "equal":
            changes.append(f"+ {new}" if not old else f"- {old}" if not new else f"{old} -> {new}")
    return "; ".join(changes) or "whitespace only"


MAX_DIFF_ITEMS = 2000
"""Longest differing middle (in tokens or pieces, after the common head and tail) aligned item by item; a
longer one is reported as one replacement. SequenceMatcher without autojunk is quadratic in it (a 200 KB
prompt took 54 s), and an edit note only needs to say where the change is."""


SHORT_DIFF_ITEMS = 1000
"""Up to this many items (both sides) the whole texts are aligned directly (cheap, and exactly the notes made
before the bound)."""



def common_ends(a: Sequence, b: Sequence) -> tuple[int, int]:
    """Lengths of the common head and of the common tail of a and b (the tail never overlaps the head)."""
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail

def bounded_opcodes(a: list, b: list) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes of ``a`` -> ``b`` in time linear in the common head and tail.

    The common head and tail are matched first (an edit is local: that leaves its neighbourhood), then the
    middle is aligned by SequenceMatcher (autojunk off: a repeated token is no junk) when it is at most
    MAX_DIFF_ITEMS long, else it is one ``replace``. On short texts the opcodes are SequenceMatcher's own
    (below SHORT_DIFF_ITEMS they are exactly SequenceMatcher's).
    """
    import difflib

    if len(a) + len(b) <= SHORT_DIFF_ITEMS:  # SequenceMatcher's own opcodes, as every note before the bound
        head, tail = common_ends(a, b)
        if len(set(a)) == len(a) and not set(b[head:len(b) - tail]) & set(a):
            # No item of a repeats and b's differing middle holds none of them: the only matches are the common
            # head and tail, on their diagonals, so SequenceMatcher's blocks are exactly those two (it finds the
            # longer first, then the other in the remainder). Its opcodes follow without running it (a fifth of
            # the cost of building a large ladder went into SequenceMatcher on one-word edits).
            return _ends_opcodes(a, b, head, tail)
        return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    head, tail = common_ends(a, b)
    ma, mb = a[head:len(a) - tail], b[head:len(b) - tail]
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    if len(ma) + len(mb) > 2 * MAX_DIFF_ITEMS:
        ops.append(("replace" if ma and mb else "delete" if ma else "insert", head, head + len(ma), head, head + len(mb)))
    elif ma or mb:
        ops += [(op, i1 + head, i2 + head, j1 + head, j2 + head)
                for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ma, mb, autojunk=False).get_opcodes()]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return ops


def _ends_opcodes(a: Sequence, b: Sequence, head: int, tail: int) -> list[tuple[str, int, int, int, int]]:
    """Opcodes of a common head, one differing middle and a common tail (SequenceMatcher's, when they are its blocks)."""
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    ea, eb = len(a) - tail, len(b) - tail
    if head < ea or head < eb:
        ops.append(("replace" if head < ea and head < eb else "delete" if head < ea else "insert", head, ea, head, eb))
    if tail:
        ops.append(("equal", ea, len(a), eb, len(b)))
    return ops
