"""The casing, typo, format, contraction, filler and option-order edits on worked examples, and their CLI."""

from __future__ import annotations

import random

import pytest
import yaml

from harness.errors import InputError
from harness.ladder.build import build_ladder, resolve_kinds
from harness.ladder.contractions import contraction_edit, expansion_edit, load_contractions
from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit
from harness.ladder.fillers import filler_word, imperative_to_question, random_suffix, tautology_suffix
from harness.ladder.formats import SEPARATORS, format_enumeration, format_separator, format_spacing
from harness.ladder.letters import KEYBOARD_NEIGHBOURS, first_letter_lowercased, keyboard_typo, lowercase_all
from harness.ladder.load import load_ladder
from harness.ladder.options import reorder_options
from harness.ladder.prompts_file import read_prompts_file
from harness.ladder.records import SEEDED_RUNGS, BasePrompt, PromptSet
from harness.ladder.structure import parse_structure
from tests.conftest import ROOT, write

MC = "Question: Which city is the capital of Italy?\nOptions:\nA. Milan\nB. Rome\nC. Naples\nD. Turin\nAnswer:"
STRUCTURED = ROOT / "ladders" / "examples" / "structured.yaml"
SEEDS = range(40)


def outputs(fn, text: str) -> set[str]:
    return {fn(text, random.Random(s)) for s in SEEDS}


# --- letters -----------------------------------------------------------------

def test_keyboard_neighbours_are_symmetric_and_adjacent():
    assert set(KEYBOARD_NEIGHBOURS) == set("abcdefghijklmnopqrstuvwxyz")
    for a, near in KEYBOARD_NEIGHBOURS.items():
        assert a not in near and all(a in KEYBOARD_NEIGHBOURS[b] for b in near), a
    assert set(KEYBOARD_NEIGHBOURS["g"]) == set("fhtybv") and set(KEYBOARD_NEIGHBOURS["q"]) == set("wa")


def test_letter_edits_leave_urls_numbers_quotes_and_compounds_alone():
    text = 'See https://Example.com/Path and "Keep This" or `Code`, 3rd v2 well-known don\'t'
    assert lowercase_all(text, random.Random(0)) == text.replace("See", "see")
    with pytest.raises(NotApplicable, match="fewer than 1 ASCII letters"):
        keyboard_typo('https://Example.com/Path "Quoted" 3rd well-known', random.Random(0))
    assert {keyboard_typo("Sky", random.Random(s)) for s in SEEDS} <= {"Aky", "Dky", "Wky", "Eky", "Zky", "Xky",
                                                                        "Sjy", "Sly", "Suy", "Siy", "Smy", "Sku",
                                                                        "Skt", "Skh", "Skg", "Sko", "Skm", "Sk,"} | {
        "S" + a + "y" for a in KEYBOARD_NEIGHBOURS["k"]} | {"Sk" + a for a in KEYBOARD_NEIGHBOURS["y"]} | {
        a.upper() + "ky" for a in KEYBOARD_NEIGHBOURS["s"]}


def test_first_letter_lowercased_skips_acronyms_and_non_words():
    assert first_letter_lowercased("Explain it.", random.Random(0)) == "explain it."
    assert first_letter_lowercased(" Explain it.", random.Random(0)) == " explain it."
    for text in ("NASA launched it.", "explain it.", "42 Explain", '"Explain" it', "\U0001d4d0 is a letter"):
        with pytest.raises(NotApplicable):
            first_letter_lowercased(text, random.Random(0))


# --- contractions ----------------------------------------------------------------

def test_contraction_and_expansion_on_examples():
    r = random.Random(0)
    assert contraction_edit("I do not know what it is.", r) == "I don't know what it is."  # "it is." ends a clause
    assert contraction_edit("DO NOT touch it", r) == "DON'T touch it"
    assert contraction_edit("It is raining, isn\u2019t it?", r) == "It\u2019s raining, isn\u2019t it?"
    assert expansion_edit("Don't stop.", r) == "Do not stop."
    assert expansion_edit("Let's go", r) == "Let us go"
    with pytest.raises(NotApplicable, match="ambiguous"):
        expansion_edit("It's fine and he's here.", r)  # "it's" may be "it has"
    with pytest.raises(NotApplicable, match="followed by a word"):
        contraction_edit("Let us know. I know what it is.", r)  # "let us" is never contracted


def test_contraction_lexicon_is_validated(tmp_path):
    lex = load_contractions()
    assert len(lex.contract) >= 35 and len(lex.expand) >= 25
    assert "it's" not in lex.expand and "let us" not in lex.contract
    bad = write(tmp_path / "c.yaml", "both:\n  do not: dont\n")
    with pytest.raises(InputError, match=r"c.yaml: both.do not: expected a lowercase contraction"):
        load_contractions(bad)
    bad = write(tmp_path / "d.yaml", "both:\n  do not: don't\ncontract_only:\n  do not: don't\n")
    with pytest.raises(InputError, match="contract_only.do not: listed twice"):
        load_contractions(bad)
    bad = write(tmp_path / "e.yaml", "both:\n  Do Not: don't\n")
    with pytest.raises(InputError, match="a key must be lowercase words"):
        load_contractions(bad)


# --- fillers -----------------------------------------------------------------------

def test_imperative_to_question_and_distractors():
    outs = outputs(imperative_to_question, "Explain why the sky is blue.")
    assert outs <= {f"{o} explain why the sky is blue?" for o in ("Can you", "Could you", "Would you", "Will you")}
    assert len(outs) > 1
    for text in ("What is 7 plus 5?", "Explain it. Then stop.", "Explain:\nfoo", "Hello there."):
        with pytest.raises(NotApplicable):
            imperative_to_question(text, random.Random(0))
    # a distractor never lands in the answer slot or inside an option
    for fn in (tautology_suffix, random_suffix):
        for out in outputs(fn, MC):
            first, rest = out.split("\n", 1)
            assert rest == MC.split("\n", 1)[1] and first.startswith("Question: Which city is the capital of Italy? ")
    assert tautology_suffix("Hello", random.Random(0)).startswith("Hello and ")
    # a filler never splits a field name
    assert all(o.startswith("Input Text: the ") for o in outputs(filler_word, "Input Text: the sky\nAnswer:"))


# --- format grammar -----------------------------------------------------------------

def test_structure_reads_fields_and_counting_lists_only():
    s = parse_structure(MC)
    assert [f.name for f in s.fields] == ["Question", "Options", "Answer"]
    (options,) = s.lists
    assert (options.style, options.wrapper, [i.label for i in options.items]) == ("upper", "{}.", list("ABCD"))
    assert parse_structure("A. one\nC. two").lists == ()  # labels must count up
    assert parse_structure("See http://x.org\nNote: y").fields[0].name == "Note"  # "http:" + "//" is no field
    assert [lst.style for lst in parse_structure("i. a\nii. b\niii. c").lists] == ["lower_roman"]


def test_separator_validity():
    seps = set()
    for out in outputs(format_separator, MC):
        lines = out.split("\n")
        assert lines[-1].rstrip() == lines[-1] and lines[-1].startswith("Answer")  # a valueless field keeps no trailing space
        seps.add(out.split("Question", 1)[1].split("Which", 1)[0])
    assert len(seps) > 5 and ": " not in seps and seps <= set(SEPARATORS)
    with pytest.raises(NotApplicable, match="different separators"):
        format_separator("Question: x\nContext - y\nTopic : z", random.Random(0))
    with pytest.raises(NotApplicable, match="fewer than 2 fields"):
        format_separator("Question: x | Answer: y", random.Random(0))  # one line, so one field


def test_spacing_joins_fields_on_one_line_only_when_each_is_one_line():
    for out in outputs(format_spacing, MC):
        assert "Options:" in out and "\nA. Milan\nB. Rome\nC. Naples\nD. Turin" in out
        before_answer = out.split("D. Turin", 1)[1].split("Answer:")[0]
        assert "\n" in before_answer  # a list is never followed by a field on the same line
    one_line = outputs(format_spacing, "Review: Cold soup.\nSentiment:")
    assert any("\n" not in o for o in one_line) and any("\n\n" in o for o in one_line)
    for o in one_line:
        joint = o[len("Review: Cold soup.") : o.index("Sentiment")]
        assert ":" not in joint  # the spacing never uses the separator's character


def test_enumeration_validity():
    styles = {o.split("\n")[2].split(" ")[0] for o in outputs(format_enumeration, MC)}
    assert styles == {"a.", "1.", "I.", "i."}  # never bullets: the labels may be what the answer names
    long = "Pick one:\n" + "\n".join(f"{i}. item {i}" for i in range(1, 31))
    assert {o.split("\n")[1][0] for o in outputs(format_enumeration, long)} <= {"I", "i"}  # no letters past z
    with pytest.raises(NotApplicable, match="mentions the label"):
        format_enumeration(MC.replace("Answer:", "Is B right? Answer:"), random.Random(0))


# --- option order ----------------------------------------------------------------

def test_the_answer_label_moves_with_its_option():
    options = {"A": "Milan", "B": "Rome", "C": "Naples", "D": "Turin"}
    orders = set()
    for s in SEEDS:
        r = reorder_options(MC, random.Random(s), answer="B")
        now = dict(line.split(". ", 1) for line in r.text.split("\n")[2:6])
        assert now[r.answer] == "Rome" and sorted(now.values()) == sorted(options.values())
        assert r.text != MC and [now[label] for label in "ABCD"] == [options[o] for o in r.order]
        orders.add(r.order)
    assert len(orders) > 5
    with pytest.raises(NotApplicable, match="'E' is not one of the option labels"):
        reorder_options(MC, random.Random(0), answer="E")


def test_option_order_applies_only_to_recognised_options():
    r = random.Random(0)
    assert reorder_options(MC.replace("Answer:", "Answer with A, B, C or D."), r).text != MC  # all labels: fine
    refusals = {
        MC.replace("D. Turin", "D. All of the above"): "refers to the others",
        MC.replace("Answer:", "Is B right?"): "names option",
        "Steps:\n1. Boil water.\n2. Add tea.": "no answer options",
        "Question: x\nA. same\nB. same": "same text",
    }
    for text, why in refusals.items():
        with pytest.raises(NotApplicable, match=why):
            reorder_options(text, r)
    assert reorder_options("Options:\n1. red\n2. blue", r).text == "Options:\n1. blue\n2. red"


# --- building, selection, draws ---------------------------------------------------

def test_every_new_kind_applies_to_some_example_prompt():
    prompts = read_prompts_file(STRUCTURED).prompt_set.prompts + (
        BasePrompt("x", "Explain why it is not raining and don't worry."),)
    new = [k for k in EDIT_KINDS if k.rung in SEEDED_RUNGS or k.name in ("contraction", "expansion")]
    for kind in new:
        made = []
        for p in prompts:
            try:
                made.append(apply_edit(kind, p.text, ladder="L", prompt_id=p.id))
            except NotApplicable:
                continue
        assert made, kind.name


def test_rung_names_select_their_kinds_and_unknown_names_are_refused():
    assert resolve_kinds(["casing", "keyboard_typo"]) == ("lowercase_all", "first_letter_lowercased", "word_uppercased",
                                                          "keyboard_typo")
    assert set(resolve_kinds(["synonym"])) == {"contraction", "expansion", "lexicon"}
    with pytest.raises(ValueError, match="unknown edit kind or rung 'casng'"):
        resolve_kinds(["casng"])


def test_pairs_per_kind_draws_distinct_pairs_and_says_when_it_cannot(tmp_path):
    prompt = BasePrompt("p", "Explain why the sky looks blue during the day.")
    one = build_ladder(PromptSet("L", "x", "0" * 64, (prompt,), edit_kinds=("keyboard_typo", "trailing_space")))
    three = build_ladder(PromptSet("L", "x", "0" * 64, (prompt,), edit_kinds=("keyboard_typo", "trailing_space"),
                                   pairs_per_kind=3))
    typos = [p for p in three.pairs if p.edit_kind == "keyboard_typo"]
    assert [p.pair_id for p in typos] == ["p/typo/keyboard_typo", "p/typo/keyboard_typo-2", "p/typo/keyboard_typo-3"]
    assert typos[0] == next(p for p in one.pairs if p.edit_kind == "keyboard_typo")  # draw 1 is the old key
    assert len({p.prompt_b for p in typos}) == 3
    # trailing_space has one outcome: draws 2 and 3 repeat it, and the ladder says so
    assert [p.pair_id for p in three.pairs if p.edit_kind == "trailing_space"] == ["p/noop_format/trailing_space"]
    assert [s.reason for s in three.skipped if s.edit_kind == "trailing_space"] == [
        "draw 2 repeats an earlier draw (fewer distinct edits than pairs per kind)",
        "draw 3 repeats an earlier draw (fewer distinct edits than pairs per kind)"]


def test_ladder_build_options_round_trip_and_bad_values_exit_2(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "l.yaml"
    rc = main(["ladder", "build", "--prompts", str(STRUCTURED), "--out", str(out), "--edit-kinds", "format,option_order",
               "--pairs-per-kind", "2"])
    printed = capsys.readouterr().out
    assert rc == 0 and "by edit kind:" in printed and "format/format_enumeration:" in printed
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert doc["pairs_per_kind"] == 2 and doc["edit_kinds"][-1] == "option_order"
    assert "# by edit kind:" in out.read_text(encoding="utf-8")
    again = load_ladder(out)
    assert {p.rung for p in again.pairs} == {"identical", "format", "option_order", "positive_control"}
    assert any(p.pair_id.endswith("-2") for p in again.pairs if p.rung == "format")
    for flag, value, message in (("--edit-kinds", "casng", "unknown edit kind or rung 'casng'"),
                                 ("--edit-kinds", ",", "expected comma-separated edit kinds"),
                                 ("--pairs-per-kind", "21", "expected an integer from 1 to 20")):
        bad = tmp_path / f"bad{len(message)}.yaml"
        rc = main(["ladder", "build", "--prompts", str(STRUCTURED), "--out", str(bad), flag, value])
        err = capsys.readouterr().err
        assert rc == 2 and f"{flag}: {value}: {message}" in err and len(err.strip().splitlines()) == 1
        assert not bad.exists()
    bad = write(tmp_path / "k.yaml", "ladder: x\npairs_per_kind: 0\nprompts:\n  - id: a\n    text: hi\n")
    with pytest.raises(InputError, match="pairs_per_kind"):
        load_ladder(bad)


def test_address_like_runs_glued_to_text_are_protected_whole():
    # Hypothesis found it: the e-mail pattern ended at "orga", leaving "@b.co" to word_uppercased ("b.CO"),
    # inside what reads as www.Test.orga@b.co.
    from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit

    text = "Question: a@b.cowww.Test.orga@b.co\nQuestion: "
    kind = next(k for k in EDIT_KINDS if k.name == "word_uppercased")
    outs = []
    for i in range(60):
        try:
            outs.append(apply_edit(kind, text, ladder="l", prompt_id=f"p{i}"))
        except NotApplicable:
            pass
    assert outs and all("a@b.cowww.Test.orga@b.co" in out for out in outs)
