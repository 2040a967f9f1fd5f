"""Properties of the ladder generators on arbitrary Unicode prompts (hypothesis, 500 examples each)."""

from __future__ import annotations

import random
import tempfile
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ladder.build import build_ladder, build_pairs
from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit
from harness.ladder.load import load_ladder
from harness.ladder.records import MECHANICAL_RUNGS, BasePrompt, PromptSet
from harness.ladder.synonyms import apply_synonym, load_lexicon
from harness.ladder.write import ladder_yaml

EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}

# Arbitrary text finds crashes; text built from the characters the edits look
# for (spaces, periods, commas, combining marks, lexicon words) finds the
# cases where an edit does act, which arbitrary text rarely reaches.
_PIECES = st.sampled_from(
    ["Explain", "big", "idea", "a", "an", "Hello", "WRITE", "é", "e\u0301", "\u0301", "ｈ", "日本語", "3.14", "don't",
     "well-known", " ", "  ", "\n", "\t", "\u200b", "\u00a0", "\u3000", ".", "..", ",", "?", "!", ":", "(", "\r\n", "¨"]
)
texts = st.one_of(st.text(), st.lists(_PIECES, max_size=12).map("".join), st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=8).map("".join))
visible_texts = texts.filter(lambda t: t.strip() != "")
keys = st.text(min_size=1, max_size=12)


def noop_normal(text: str) -> str:
    """What a reader sees: NFKC, then whitespace collapsed (zero-width spaces collapse to nothing).

    NFKC comes first on purpose: a zero-width space inserted between a letter
    and its combining accent would block their composition and fail here.
    """
    text = unicodedata.normalize("NFKC", text)
    return " ".join("".join(ch for ch in text if ch not in ZERO_WIDTH).split())


def without_punctuation(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def without_whitespace(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


def _applied(text: str, ladder: str = "L", prompt_id: str = "p", rungs: tuple[str, ...] = MECHANICAL_RUNGS):
    # The other rungs' kinds have their own properties (test_ladder_perturbation_properties.py).
    for kind in EDIT_KINDS:
        if kind.rung not in rungs:
            continue
        try:
            yield kind, apply_edit(kind, text, ladder=ladder, prompt_id=prompt_id)
        except NotApplicable:
            continue


@EXAMPLES
@given(texts, keys, keys)
def test_generators_never_crash(text, ladder, prompt_id):
    for kind, out in _applied(text, ladder, prompt_id):
        assert isinstance(out, str) and out != text, kind.name
    try:
        edit = apply_synonym(text, ladder=ladder, prompt_id=prompt_id)
    except NotApplicable:
        return
    assert edit.text != text and edit.word.lower() in load_lexicon().words


@EXAMPLES
@given(texts, keys, keys, st.integers())
def test_the_same_key_gives_the_same_output(text, ladder, prompt_id, noise):
    first = dict((k.name, out) for k, out in _applied(text, ladder, prompt_id))
    random.seed(noise)  # global random state must not matter
    random.random()
    again = dict((k.name, out) for k, out in _applied(text, ladder, prompt_id))
    assert first == again


@EXAMPLES
@given(texts)
def test_noop_edits_keep_the_normalized_text(text):
    for kind, out in _applied(text, rungs=("noop_format",)):
        if kind.rung == "noop_format":
            assert noop_normal(out) == noop_normal(text), (kind.name, text, out)


@EXAMPLES
@given(texts)
def test_punctuation_edits_change_only_punctuation(text):
    for kind, out in _applied(text, rungs=("punctuation",)):
        if kind.rung == "punctuation":
            assert without_punctuation(out) == without_punctuation(text), (kind.name, text, out)


@EXAMPLES
@given(texts)
def test_structural_edits_change_only_whitespace(text):
    for kind, out in _applied(text, rungs=("structural",)):
        if kind.rung == "structural":
            assert without_whitespace(out) == without_whitespace(text), (kind.name, text, out)


@EXAMPLES
@given(visible_texts, keys)
def test_every_mechanical_rung_applies_to_every_visible_prompt(text, prompt_id):
    rungs = {kind.rung for kind, _ in _applied(text, prompt_id=prompt_id)}
    assert rungs >= set(MECHANICAL_RUNGS), (text, rungs)


prompt_lists = st.lists(st.tuples(visible_texts, st.sampled_from(["a", "b", "c"])), min_size=1, max_size=4)


@EXAMPLES
@given(prompt_lists, keys)
def test_identical_pairs_are_byte_equal(items, ladder):
    prompts = [BasePrompt(f"p{i}", text, topic) for i, (text, topic) in enumerate(items)]
    pairs, _ = build_pairs(ladder, prompts, {})
    identical = [p for p in pairs if p.rung == "identical"]
    assert len(identical) == len(prompts)
    for p in identical:
        assert p.prompt_a.encode("utf-8") == p.prompt_b.encode("utf-8")
    for p in pairs:
        assert p.rung == "identical" or p.prompt_a != p.prompt_b, p.pair_id


ids = st.text(min_size=1, max_size=6).filter(lambda i: "/" not in i and all(c.isprintable() and not c.isspace() for c in i))
topics = st.one_of(st.sampled_from(["a", "b", "c"]), st.text(max_size=5))


@EXAMPLES
@given(st.lists(st.tuples(ids, visible_texts, topics), min_size=1, max_size=4,
                unique_by=(lambda t: t[0], lambda t: t[1])),  # ids and texts: the loader refuses a repeated prompt
       keys.filter(lambda k: k.strip() != ""))
def test_a_written_ladder_loads_back_to_the_same_pairs(items, name):
    prompts = tuple(BasePrompt(pid, text, topic) for pid, text, topic in items)
    prompt_set = PromptSet(name, "prompts.txt", "0" * 64, prompts)
    ladder = build_ladder(prompt_set)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ladder.yaml"
        path.write_text(ladder_yaml(prompt_set, ladder), encoding="utf-8")
        again = load_ladder(path)
    assert again.name == name and again.prompts == ladder.prompts
    assert again.pairs == ladder.pairs and again.skipped == ladder.skipped
