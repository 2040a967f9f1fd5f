"""Properties of the casing, typo, format, contraction, filler and option-order edits (hypothesis, 500 examples per kind).

For every kind, on arbitrary Unicode text and on generated prompts with
fields and option lists: the edit applies or says why not, gives the same
output for the same key whatever the global random state, never returns the
prompt unchanged, never moves a combining mark to another letter, never
changes a number or a URL, and changes only what its rung promises.
"""

from __future__ import annotations

import random
import re
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ladder.contractions import load_contractions
from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit
from harness.ladder.records import SEEDED_RUNGS
from harness.ladder.structure import STYLES, WRAPPERS, enumerator

EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
NEW_KINDS = [k for k in EDIT_KINDS if k.rung in SEEDED_RUNGS or k.name in ("contraction", "expansion")]

# The test's own readings of numbers and URLs (not the module's), so a shared mistake cannot hide.
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
URL_RX = re.compile(r"https?://[^\s\"`]*[^\s\"`.,;:!?)]|www\.[^\s\"`]*[^\s\"`.,;:!?)]")
LABEL = re.compile(r"(?m)^[ \t]*[(\[<]?(?:[0-9]{1,2}|[A-Za-z]|[ivxlIVXL]{1,6})[.)\]>]?(?: -)?(?=[ \t])")

_PIECES = st.sampled_from([
    "Explain", "the", "sky", "Do", "not", "do not", "don't", "DON'T", "don\u2019t", "it", "is", "I", "am", "I'm", "let's",
    "cannot", "Write", "WRITE", "List", "é", "e\u0301", "\u0301", "A\u0308", "日本語", "İstanbul", "ß", "ǅ", "3.14", "72",
    "10,000", "3rd", "v2", "https://example.com/Path?q=1", "www.Test.org", "a@b.co", "`Code`", "\"Quoted Text\"", "“Curly”",
    " ", " ", " ", "  ", "\n", "\t", ".", "?", "!", ":", ",", "(", "-", "'", "\u200b", "all of the above",
])
words = st.lists(_PIECES, max_size=10).map("".join)
sentences = st.lists(st.one_of(_PIECES, _PIECES, st.text(max_size=3)), min_size=1, max_size=8).map(" ".join)
texts = st.one_of(st.text(max_size=30), words, sentences)
imperatives = st.tuples(st.sampled_from(["Explain", "Write", "list", "Give", "Describe", "WRITE"]), sentences,
                        st.sampled_from([".", "!", "", "?", ":", ". "])).map(lambda t: f"{t[0]} {t[1]}{t[2]}")
line_text = st.one_of(words, st.text(max_size=8)).map(lambda t: t.replace("\n", " ").replace("\r", " "))


@st.composite
def structured(draw) -> str:
    """A prompt with fields (``Name: value``), maybe an option list, maybe an answer cue."""
    blocks = []
    if draw(st.booleans()):
        blocks.append(draw(line_text))
    sep = draw(st.sampled_from([": ", ":", " : ", ":\t", ":  "]))
    for name in draw(st.lists(st.sampled_from(["Question", "Context", "review", "Input Text", "TOPIC"]), max_size=3)):
        blocks.append(name + sep + draw(line_text))
    if draw(st.integers(0, 3)):
        header = draw(st.sampled_from(["Options:", "Choices:", "", "Steps:"]))
        style = draw(st.sampled_from(["upper", "upper", "lower", *STYLES, "bullet"]))
        wrapper = draw(st.sampled_from(WRAPPERS))
        items = []
        for i in range(draw(st.integers(2, 6))):
            label = "-" if style == "bullet" else wrapper.format(enumerator(style, i))
            items.append(label + draw(st.sampled_from([" ", "  ", "\t"])) + draw(line_text.filter(lambda t: t.strip())))
        blocks.append("\n".join(([header] if header else []) + items))  # a list is consecutive lines
    if draw(st.booleans()):
        blocks.append(draw(st.sampled_from(["Answer:", "Sentiment:", "Answer: ", "answer:"])))
    return draw(st.sampled_from(["\n", "\n\n"])).join(blocks)


phrases = st.tuples(sentences, st.sampled_from(["do not", "It is", "I am", "DO NOT", "cannot", "let us", "what is", "don't", "I\u2019m"]),
                    sentences).map(" ".join)
prompts = st.one_of(texts, imperatives, phrases, structured(), structured())
keys = st.text(min_size=1, max_size=8)


def clusters(text: str) -> list[str]:
    """Each character with the combining marks that follow it (a mark at the start stands alone)."""
    out: list[str] = []
    for ch in text:
        if out and unicodedata.category(ch).startswith("M"):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def case_key(s: str) -> str:
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)


def only_inserts(a: str, b: str) -> bool:
    """``b`` is ``a`` with characters inserted (``a`` is a subsequence of ``b``)."""
    rest = iter(b)
    return all(ch in rest for ch in a)


def alnum(s: str) -> str:
    return "".join(c for c in s if c.isalnum())


def check_rung(name: str, rung: str, a: str, b: str) -> None:
    if rung == "casing" or name == "format_field_casing":
        assert len(a) == len(b) and case_key(a) == case_key(b)
    elif name in ("keyboard_typo", "keyboard_typo_2"):
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        assert len(a) == len(b) and 1 <= len(diff) <= (1 if name == "keyboard_typo" else 2)
        assert all(x.isascii() and x.isalpha() and y.isascii() and y.isalpha() for x, y in diff)
    elif name == "dropped_letter":
        assert len(b) == len(a) - 1 and only_inserts(b, a)
    elif name == "doubled_letter":
        assert len(b) == len(a) + 1 and only_inserts(a, b)
    elif name in ("filler_word", "tautology_suffix", "random_suffix"):
        assert only_inserts(a, b)
    elif name == "politeness_wrapper":
        assert only_inserts(a[1:], b) and a[0].lower() in b.lower()
    elif name == "imperative_to_question":
        core = a.rstrip()
        core = core[:-1] if core[-1] in ".!" else core
        assert (core[0].lower() + core[1:]) in b and b.rstrip().endswith("?")
    elif name in ("contraction", "expansion"):
        lex = load_contractions()
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        j = 0
        while j < min(len(a), len(b)) - i and a[-1 - j] == b[-1 - j]:
            j += 1
        # widen the changed region to whole words on both sides
        while i and (a[i - 1].isalpha() or a[i - 1] in "'\u2019"):
            i -= 1
        while j and (a[len(a) - j].isalpha() or a[len(a) - j] in "'\u2019"):
            j -= 1
        old, new = a[i : len(a) - j].lower().replace("\u2019", "'"), b[i : len(b) - j].lower().replace("\u2019", "'")
        if name == "contraction":
            assert lex.contract.get(old) == new, (old, new)
        else:
            assert lex.expand.get(old) == new, (old, new)
    elif name in ("format_separator", "format_spacing", "format_item_wrapper"):
        assert alnum(a) == alnum(b)
    elif name == "format_enumeration":
        assert alnum(LABEL.sub("", a)) == alnum(LABEL.sub("", b))
        assert a.count("\n") == b.count("\n")
    elif name == "option_order":
        assert sorted(alnum(a)) == sorted(alnum(b)) and a.count("\n") == b.count("\n")
    else:  # pragma: no cover - a new kind must say what it promises
        raise AssertionError(f"no rung check for {name}")


@EXAMPLES
@given(text=prompts, ladder=keys, prompt_id=keys, noise=st.integers())
def test_every_new_kind_on_the_same_500_examples(text, ladder, prompt_id, noise):
    # One generated prompt serves every kind (drawing examples is what costs time): each kind sees all 500.
    for kind in NEW_KINDS:
        check_kind(kind, text, ladder, prompt_id, noise)


def check_kind(kind, text: str, ladder: str, prompt_id: str, noise: int) -> None:
    try:
        out = apply_edit(kind, text, ladder=ladder, prompt_id=prompt_id)
    except NotApplicable as why:
        assert str(why).strip(), kind.name  # says why
        return
    assert isinstance(out, str) and out != text, kind.name
    random.seed(noise)  # the global random state must not matter
    random.random()
    assert apply_edit(kind, text, ladder=ladder, prompt_id=prompt_id) == out
    # combining sequences: no mark ends up on a letter (or at a place) it was not on
    before = {case_key(c) for c in clusters(text) if len(c) > 1 or unicodedata.category(c).startswith("M")}
    after = [case_key(c) for c in clusters(out) if len(c) > 1 or unicodedata.category(c).startswith("M")]
    assert all(c in before for c in after), (kind.name, text, out)
    # numbers and URLs
    if kind.name == "format_enumeration":
        assert NUMBER.findall(LABEL.sub("", text)) == NUMBER.findall(LABEL.sub("", out))
    elif kind.name == "option_order":
        assert sorted(NUMBER.findall(text)) == sorted(NUMBER.findall(out))
    else:
        assert NUMBER.findall(text) == NUMBER.findall(out), (kind.name, text, out)
    for url in URL_RX.findall(text):
        assert out.count(url) >= text.count(url), (kind.name, url, out)
    try:
        check_rung(kind.name, kind.rung, text, out)
    except AssertionError as exc:
        raise AssertionError(f"{kind.name}: {text!r} -> {out!r}: {exc}") from None
