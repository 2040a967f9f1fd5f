"""The positive control's pairing: each prompt meets the least related prompt of another topic.

:func:`unrelated` is the definition (a pass over every other prompt: quadratic over a ladder);
:class:`UnrelatedIndex` makes the same choice for every prompt of a ladder in near-linear time
(tests/ladder/test_bounded_work.py checks the two agree on common, rare and tied words).
"""

from __future__ import annotations

import random

from harness.ladder.records import BasePrompt
from harness.ladder.textspans import seed_for, word_spans

# Words that say what kind of request a prompt is, not what it is about: they
# must not make two prompts look related when picking a positive control.
_FORM_WORDS = frozenset(
    "about also does each explain describe from give have into list make more most should some than that "
    "their them then there they this what when where which will with would could write your".split()
)


def content_words(text: str) -> frozenset[str]:
    words = (w.text.lower() for w in word_spans(text))
    return frozenset(w for w in words if len(w) >= 4 and w not in _FORM_WORDS)


def _same_words(a: str, b: str) -> bool:
    return a.split() == b.split()


def _rng(ladder: str, p: BasePrompt) -> random.Random:
    return random.Random(seed_for(ladder, p.id, "positive_control", "unrelated_prompt"))


def unrelated(ladder: str, p: BasePrompt, prompts: list[BasePrompt]) -> BasePrompt | None:
    """A prompt of another topic sharing the fewest content words with ``p``; ties broken by the stable seed.

    A file may hold the same prompt twice under two topics; that copy is no control. The reference
    definition (the pairing :class:`UnrelatedIndex` computes without a pass over every other prompt).
    """
    others = [q for q in prompts if q.topic != p.topic and not _same_words(q.text, p.text)]
    if not others:
        return None
    mine = content_words(p.text)
    overlap = [len(mine & content_words(q.text)) for q in others]
    least_n = min(overlap)
    least = [q for q, n in zip(others, overlap) if n == least_n]
    return least[_rng(ladder, p).randrange(len(least))]


def _mask(positions: list[int] | set[int], n: int) -> int:
    """The set of prompt positions as an int whose bit j is prompt j."""
    if len(positions) < 8:  # a shift per bit costs a pass over the int: cheaper below a few bits
        return sum(1 << j for j in set(positions))
    bits = bytearray((n + 7) // 8)
    for j in positions:
        bits[j >> 3] |= 1 << (j & 7)
    return int.from_bytes(bits, "little")


_POP = bytes(bin(b).count("1") for b in range(256))


def _select(mask: int, k: int) -> int:
    """Position of the ``k``-th (from 0) set bit of ``mask``, lowest first: chunk popcounts, then bytes."""
    data = mask.to_bytes((mask.bit_length() + 7) // 8, "little")
    at = 0
    for size in (4096, 256, 16):
        while True:
            c = int.from_bytes(data[at : at + size], "little").bit_count()
            if k < c:
                break
            k -= c
            at += size
    while k >= _POP[data[at]]:
        k -= _POP[data[at]]
        at += 1
    byte = data[at]
    for bit in range(8):
        if byte >> bit & 1:
            if k == 0:
                return 8 * at + bit
            k -= 1
    raise AssertionError("unreachable: k is below the popcount")


def _add(planes: list[int], mask: int) -> None:
    """Add 1 to the per-prompt counters held bit-sliced in ``planes`` (plane b = bit b of every count) at ``mask``."""
    carry = mask
    for b, plane in enumerate(planes):
        planes[b] = plane ^ carry
        carry &= plane
        if not carry:
            return
    planes.append(carry)


class UnrelatedIndex:
    """:func:`unrelated` for every prompt of a ladder in near-linear time (the same choice, tested against it).

    Sets of prompts are bit masks (a Python int: bit j is prompt j), so a set operation costs n/64 machine
    words whatever the sets hold. A word held by many prompts keeps its mask; a rare one keeps its list of
    positions (masks for every word would take words x n bits). For prompt p: the others are every prompt
    but those of p's topic or words; those sharing no content word with p are the others outside the union
    of p's words' sets. When that is empty (every other prompt shares a word) the overlap of each prompt is
    counted bit-sliced (an adder over the masks) and the least count that occurs is taken. The control is
    then the k-th prompt of the least-related set in file order, k drawn as :func:`unrelated` draws it.
    Cost per prompt: a few passes over n bits plus the positions of its rare words.
    """

    def __init__(self, prompts: list[BasePrompt]) -> None:
        self.prompts = prompts
        self.n = n = len(prompts)
        self.words = [content_words(q.text) for q in prompts]
        holders: dict[str, list[int]] = {}
        for i, ws in enumerate(self.words):
            for w in ws:
                holders.setdefault(w, []).append(i)
        # Dense words as masks: at most (word occurrences) * 256 / n of them, so their masks total 32 bytes per
        # word occurrence; sparse ones as lists, each under n/256 long.
        dense = max(32, n // 256)
        self.masks = {w: _mask(ix, n) for w, ix in holders.items() if len(ix) >= dense}
        self.lists = {w: ix for w, ix in holders.items() if len(ix) < dense}
        self.by_topic: dict[str, list[int]] = {}
        self.by_words: dict[tuple[str, ...], list[int]] = {}
        for i, q in enumerate(prompts):
            self.by_topic.setdefault(q.topic, []).append(i)
            self.by_words.setdefault(tuple(q.text.split()), []).append(i)
        self.everyone = (1 << n) - 1

    def _word_mask(self, w: str) -> int:
        return self.masks[w] if w in self.masks else _mask(self.lists[w], self.n)

    def pick(self, ladder: str, i: int) -> BasePrompt | None:
        p = self.prompts[i]
        excluded = set(self.by_topic[p.topic]) | set(self.by_words[tuple(p.text.split())])
        if len(excluded) >= self.n:
            return None
        others = self.everyone & ~_mask(excluded, self.n)
        mine = sorted(self.words[i])
        touched, rare = 0, []
        for w in mine:
            if w in self.masks:
                touched |= self.masks[w]
            else:
                rare += self.lists[w]
        least = others & ~(touched | _mask(rare, self.n))
        if not least:  # every other prompt shares a word with p: count the shared words
            planes: list[int] = []
            for w in mine:
                _add(planes, self._word_mask(w))
            for count in range(1, len(mine) + 1):
                if count.bit_length() > len(planes):
                    break
                least = others
                for b, plane in enumerate(planes):
                    least &= plane if count >> b & 1 else ~plane
                if least:
                    break
        assert least, "some other prompt exists, so some overlap count occurs"
        return self.prompts[_select(least, _rng(ladder, p).randrange(least.bit_count()))]
