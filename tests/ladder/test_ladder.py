"""Ladder loading, seeded edits and the published pair importer."""

import json
import unicodedata

import pytest

from harness.errors import InputError
from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit
from harness.ladder.load import DEFAULT_LADDER, load_ladder
from harness.ladder.records import RUNGS, SEEDED_RUNGS
from tests.conftest import write


def test_default_ladder_covers_every_rung_with_enough_prompts():
    ladder = load_ladder(DEFAULT_LADDER)
    assert len(ladder.prompts) >= 16
    assert sum(p.in_domain for p in ladder.prompts) >= 8
    counts = ladder.rung_counts()
    # the default keeps the kinds it always had (its nightly numbers stay comparable)
    assert {r for r in RUNGS if counts[r]} == set(RUNGS) - set(SEEDED_RUNGS), counts
    perturbations = load_ladder(DEFAULT_LADDER.parent / "perturbations.yaml").rung_counts()
    assert all(perturbations[r] > 0 for r in RUNGS), perturbations
    assert len({p.pair_id for p in ladder.pairs}) == len(ladder.pairs)
    # Every identical pair is byte-equal; every other pair differs.
    for p in ladder.pairs:
        assert (p.prompt_a == p.prompt_b) == (p.rung == "identical") or p.edit_kind == "nfd_decomposed"


def test_building_twice_gives_the_same_ladder():
    a, b = load_ladder(DEFAULT_LADDER), load_ladder(DEFAULT_LADDER)
    assert a.pairs == b.pairs and a.skipped == b.skipped


def test_edits_depend_only_on_their_key():
    text = "Write a concise Python function that checks whether a string is a palindrome."
    for kind in EDIT_KINDS:
        try:
            x = apply_edit(kind, text, ladder="L", prompt_id="p1")
        except NotApplicable:
            continue
        assert x == apply_edit(kind, text, ladder="L", prompt_id="p1")
    # a different prompt id moves the random choices (for an edit with many spots)
    kind = next(k for k in EDIT_KINDS if k.name == "parenthesized_word")
    outs = {apply_edit(kind, text, ladder="L", prompt_id=f"p{i}") for i in range(10)}
    assert len(outs) > 1


def test_noop_edits_preserve_normalized_text():
    text = "Explain how small changes can affect a complex system over time."
    norm = lambda s: " ".join(unicodedata.normalize("NFKC", s).replace("\u200b", "").split())  # noqa: E731
    for kind in EDIT_KINDS:
        if kind.rung != "noop_format":
            continue
        try:
            out = apply_edit(kind, text, ladder="L", prompt_id="p")
        except NotApplicable:
            continue
        assert norm(out) == norm(text), kind.name


def test_skipped_edits_are_recorded_with_a_reason():
    ladder = load_ladder(DEFAULT_LADDER)
    skipped = {(s.prompt_id, s.edit_kind) for s in ladder.skipped}
    assert ("reverse-apple", "comma_to_semicolon") in skipped  # the prompt has no comma
    assert all(s.reason for s in ladder.skipped)


def test_published_pair_file_is_imported_as_is(fixtures):
    ladder = load_ladder(fixtures / "pairs" / "prompt_pairs.json")
    raw = json.loads((fixtures / "pairs" / "prompt_pairs.json").read_text())
    assert [p.pair_id for p in ladder.pairs] == [r["id"] for r in raw]
    assert [(p.prompt_a, p.prompt_b) for p in ladder.pairs] == [(r["prompt_a"], r["prompt_b"]) for r in raw]
    assert ladder.pairs[0].rung == "identical"


@pytest.mark.parametrize(
    "content, field, message",
    [
        ("[{]", "line 1", "invalid JSON"),
        ('[{"id": "a", "category": "weird", "prompt_a": "x", "prompt_b": "y"}]', "[0].category", "unknown category"),
        ('[{"id": "a", "category": "paraphrase", "prompt_a": " ", "prompt_b": "y"}]', "[0].prompt_a", "empty prompt"),
        ('[{"id": "a", "category": "paraphrase", "prompt_a": "x", "prompt_b": "y"},'
         ' {"id": "a", "category": "paraphrase", "prompt_a": "x", "prompt_b": "z"}]', "[1].id", "duplicate id"),
        ('[{"id": "a", "category": "paraphrase", "prompt_a": "x"}]', "[0].prompt_b", "missing"),
        ('[{"id": "a", "id": "b", "category": "paraphrase", "prompt_a": "x", "prompt_b": "y"}]', "id", "duplicate key"),
        ('{"id": "a"}', "(top level)", "non-empty JSON list"),
    ],
)
def test_bad_pair_files(tmp_path, content, field, message):
    path = write(tmp_path / "pairs.json", content)
    with pytest.raises(InputError) as err:
        load_ladder(path)
    line = err.value.one_line()
    assert line.startswith(str(path)) and field in line and message in line


@pytest.mark.parametrize(
    "content, field, message",
    [
        ("ladder: x\nprompts:\n  - id: a\n    text: ''\n", "prompts[0].text", "empty prompt"),
        ("ladder: x\nprompts:\n  - id: a\n    text: hi\n  - id: a\n    text: yo\n", "prompts[1].id", "duplicate id"),
        ("ladder: x\nprompts:\n  - id: a\n    text: hi\n    curated:\n      sarcasm: [x]\n", "prompts[0].curated.sarcasm", "unknown key"),
        ("ladder: x\nedit_kinds: [bogus]\nprompts:\n  - id: a\n    text: hi\n", "edit_kinds", "unknown edit kind"),
        ("ladder: x\nprompts: []\n", "prompts", "no prompts"),
    ],
)
def test_bad_ladder_yaml(tmp_path, content, field, message):
    path = write(tmp_path / "ladder.yaml", content)
    with pytest.raises(InputError) as err:
        load_ladder(path)
    line = err.value.one_line()
    assert line.startswith(str(path)) and field in line and message in line


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_ladder(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"ladder: x\nprompts:\n  - id: a\n    text: \xff\xfe\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        load_ladder(bad)
