"""Prompts files -> full ladders: reading, building, writing, showing, and the CLI around them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.cli import main
from harness.errors import InputError
from harness.ladder.build import build_ladder
from harness.ladder.coverage import rung_coverage
from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit, edit_kind
from harness.ladder.load import load_ladder
from harness.ladder.prompts_file import ladder_from_prompts, prompt_ids, read_prompts_file
from harness.ladder.records import MECHANICAL_RUNGS, RUNGS, SEEDED_RUNGS
from harness.ladder.show import show_ladder, visible
from harness.ladder.synonyms import LEXICON_EDIT_KIND, Lexicon, load_lexicon, match_case, synonym_edit
from harness.ladder.write import ladder_yaml
from tests.conftest import ROOT, write

PROMPTS50 = ROOT / "ladders" / "examples" / "prompts50.txt"
EVERY_PROMPT = ("identical", *MECHANICAL_RUNGS, "positive_control")


def _run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


# --- the 50-line example ---------------------------------------------------

def test_prompts50_gets_every_generated_rung_for_every_prompt():
    read = read_prompts_file(PROMPTS50)
    ladder = build_ladder(read.prompt_set)
    assert len(ladder.prompts) == 50 and read.blank_lines == 0
    assert [p.id for p in ladder.prompts][:2] == ["p001", "p002"]
    for rung in EVERY_PROMPT:
        have = {p.prompt_id for p in ladder.pairs if p.rung == rung}
        assert have == {p.id for p in ladder.prompts}, rung
    cov = {c.rung: c for c in rung_coverage(ladder)}
    assert cov["synonym"].pairs > 25  # most general prompts hold a lexicon word
    assert cov["paraphrase"].pairs == 0 and "curated only" in cov["paraphrase"].empty_reason
    assert len({p.pair_id for p in ladder.pairs}) == len(ladder.pairs)


def test_build_writes_a_ladder_that_loads_back_to_the_same_pairs(tmp_path, capsys):
    out = tmp_path / "x.yaml"
    rc, stdout, err = _run(capsys, "ladder", "build", "--prompts", str(PROMPTS50), "--out", str(out))
    assert rc == 0, err
    assert "written to" in stdout and "paraphrase: EMPTY" in stdout
    text = out.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("noop_format: " in h and "pairs" in h for h in header)
    assert any("paraphrase: EMPTY (curated only" in h for h in header)
    assert any("synonym/lexicon" in h and "no word of the synonym lexicon" in h for h in header)
    direct = ladder_from_prompts(PROMPTS50)
    again = load_ladder(out)
    assert again.name == direct.name == "prompts50"
    assert again.pairs == direct.pairs and again.skipped == direct.skipped


def test_build_without_out_prints_the_yaml(tmp_path, capsys):
    rc, stdout, _ = _run(capsys, "ladder", "build", "--prompts", str(PROMPTS50), "--name", "mine")
    assert rc == 0 and stdout.startswith("# Ladder 'mine'")
    assert load_ladder(write(tmp_path / "l.yaml", stdout)).pairs == ladder_from_prompts(PROMPTS50, "mine").pairs


def test_the_name_seeds_the_edits():
    a, b = ladder_from_prompts(PROMPTS50, "one"), ladder_from_prompts(PROMPTS50, "two")
    assert [p.prompt_b for p in a.pairs] != [p.prompt_b for p in b.pairs]


def test_show_makes_edits_visible(tmp_path, capsys):
    out = tmp_path / "x.yaml"
    assert main(["ladder", "build", "--prompts", str(PROMPTS50), "--out", str(out)]) == 0
    capsys.readouterr()
    rc, stdout, _ = _run(capsys, "ladder", "show", str(out), "--rung", "noop_format")
    assert rc == 0
    assert "⟨ZWSP⟩" in stdout and "⟨U+FF" in stdout and "·" in stdout and "⏎" in stdout
    assert "Δ: @" in stdout and "legend:" in stdout
    assert "rung=punctuation" not in stdout


def test_visible_escapes_its_own_markers_and_odd_spaces():
    assert visible("a·b") == "a⟨U+00B7⟩b"
    assert visible("a\u3000b\u00a0c\rd") == "a⟨U+3000⟩b⟨NBSP⟩c⟨U+000D⟩d"
    assert visible("e\u0301") == "e⟨U+0301⟩"


def test_run_and_audit_take_prompts_or_ladder_not_both(tmp_path, capsys):
    prompts = write(tmp_path / "p.txt", "Hello there.\n")
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--prompts", str(prompts), "--ladder", "x.yaml", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "not allowed with argument" in err and err.count("\n") == 0
    bad = write(tmp_path / "p.json", '[{"id": "a", "text": "hi", "colour": 1}]')
    rc, _, err = _run(capsys, "run", "--models", "tiny-chat", "--prompts", str(bad), "--out", str(tmp_path / "r"))
    assert rc == 2 and err == f"stabprobe: error: {bad}: [0].colour: unknown key"
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


# --- reading prompts files -------------------------------------------------

def test_txt_keeps_lines_exactly_and_counts_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffFirst prompt. \r\n\n   \nSecond\tprompt\n\n".encode("utf-8"))
    read = read_prompts_file(path)
    assert [(p.id, p.text, p.topic) for p in read.prompt_set.prompts] == [
        ("p001", "First prompt. ", "p001"), ("p002", "Second\tprompt", "p002")]
    assert read.blank_lines == 3 and read.prompt_set.name == "p"


def test_ids_widen_past_999():
    ids = prompt_ids(1000)
    assert ids[0] == "p0001" and ids[-1] == "p1000" and ids == sorted(ids)


def test_json_and_yaml_lists(tmp_path):
    items = ["Plain string prompt.", {"id": "q", "text": "An object.", "topic": "t"},
             {"id": "r", "text": "With curation.", "curated": {"paraphrase": ["Curated, too."]}}]
    for path in (write(tmp_path / "p.json", json.dumps(items)), write(tmp_path / "p.yaml", _yaml(items))):
        ladder = ladder_from_prompts(path)
        assert [(p.id, p.topic) for p in ladder.prompts] == [("p001", "p001"), ("q", "t"), ("r", "r")]
        assert any(p.pair_id == "r/paraphrase/curated" for p in ladder.pairs)


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, allow_unicode=True)


@pytest.mark.parametrize(
    "name, content, field, message",
    [
        ("p.txt", "\n  \n\n", "prompts", "no prompts (3 blank lines)"),
        ("p.json", "[]", "prompts", "no prompts"),
        ("p.json", "{\"a\": 1}", "(top level)", "expected a list of prompts"),
        ("p.json", "[\"ok\", 3]", "[1]", "expected a string or an object"),
        ("p.json", "[{\"text\": \"x\"}]", "[0].id", "missing"),
        ("p.json", "[{\"id\": \"a\", \"text\": \"  \"}]", "[0].text", "empty prompt"),
        ("p.json", "[{\"id\": \"a/b\", \"text\": \"x\"}]", "[0].id", "no '/'"),
        ("p.json", "[{\"id\": \"a b\", \"text\": \"x\"}]", "[0].id", "whitespace"),
        ("p.json", "[{\"id\": \"a\", \"text\": \"x\"}, {\"id\": \"a\", \"text\": \"y\"}]", "[1].id", "duplicate id 'a'"),
        ("p.json", "[\"x\", {\"id\": \"p001\", \"text\": \"y\"}]", "[1].id", "duplicate id 'p001'"),
        ("p.json", "[{\"id\": \"a\", \"id\": \"b\", \"text\": \"x\"}]", "id", "duplicate key"),
        ("p.json", "[{]", "line 1", "invalid JSON"),
        ("p.json", "[{\"id\": \"a\", \"text\": \"x\", \"curated\": {\"sarcasm\": [\"y\"]}}]", "[0].curated.sarcasm", "unknown key"),
        ("p.yaml", "- id: a\n  text: x\n  topic: [1]\n", "[0].topic", "expected a string"),
        ("p.yaml", "ladder: x\nprompts: []\n", "(top level)", "pass it with --ladder"),
        ("p.yaml", "- id: a\n  text: x\n  text: y\n", "text", "duplicate key"),
        ("p.csv", "a,b\n", "file", "expected a prompts file"),
    ],
)
def test_bad_prompts_files(tmp_path, name, content, field, message):
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as err:
        read_prompts_file(path)
    line = err.value.one_line()
    assert line.startswith(f"{path}: {field}: ") and message in line, line


def test_missing_and_non_utf8_prompts_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_prompts_file(tmp_path / "nope.txt")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_prompts_file(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="empty ladder name"):
        read_prompts_file(PROMPTS50, name=" ")


# --- edits, synonyms and the positive control ------------------------------

def test_zero_width_space_never_separates_a_letter_from_its_accent():
    # Regression: "e" + U+0301 used to become "e" + ZWSP + U+0301, which blocks NFC composition.
    for pid in ("a", "b", "c", "d"):
        out = apply_edit(edit_kind("zero_width_space"), "cafe\u0301 ole\u0301", ladder="L", prompt_id=pid)
        assert "\u200b\u0301" not in out


def test_a_one_word_prompt_still_gets_every_mechanical_rung():
    for text in ("Hello", "???", "42", "日本語", "\u200b", "  .  "):
        rungs = set()
        for kind in EDIT_KINDS:
            try:
                apply_edit(kind, text, ladder="L", prompt_id="p")
            except NotApplicable:
                continue
            rungs.add(kind.rung)
        assert set(MECHANICAL_RUNGS) <= rungs <= set(MECHANICAL_RUNGS) | set(SEEDED_RUNGS), text


def test_duplicated_period_leaves_numbers_alone():
    out = apply_edit(edit_kind("duplicated_period"), "Round 3.14 to one digit.", ladder="L", prompt_id="p")
    assert out == "Round 3.14 to one digit.."


def test_lexicon_is_a_few_hundred_words_and_validated(tmp_path):
    lex = load_lexicon()
    assert len(lex.words) >= 300
    assert all(w not in v for w, v in lex.words.items())
    bad = write(tmp_path / "s.yaml", "words:\n  big: [big]\n")
    with pytest.raises(InputError, match="words.big\\[0\\]: a word is not its own synonym"):
        load_lexicon(bad)
    bad = write(tmp_path / "t.yaml", "words:\n  Big: [large]\n")
    with pytest.raises(InputError, match="words.Big: a key must be one lowercase word"):
        load_lexicon(bad)


def test_synonym_keeps_case_and_fixes_the_article():
    lex = Lexicon("test", {"idea": ("notion",), "huge": ("enormous",)})
    import random

    assert synonym_edit("An idea.", lex, random.Random(0)).text == "A notion."
    assert synonym_edit("WRITE A HUGE ESSAY", lex, random.Random(0)).text == "WRITE AN ENORMOUS ESSAY"
    assert synonym_edit("Huge!", lex, random.Random(0)).text == "Enormous!"
    assert match_case("BIG", "large") == "LARGE" and match_case("Big", "large") == "Large"
    with pytest.raises(NotApplicable, match="no word of the synonym lexicon"):
        synonym_edit("a huge-idea, idea's", lex, random.Random(0))  # compounds and contractions are left alone


def test_prompts_without_a_lexicon_word_get_no_synonym_and_the_ladder_says_so(tmp_path):
    ladder = ladder_from_prompts(write(tmp_path / "p.txt", "Zyx qwv.\nExplain gravity.\n"))
    assert [p.prompt_id for p in ladder.pairs if p.rung == "synonym"] == ["p002"]
    lexicon_skips = [(s.prompt_id, s.rung, s.edit_kind) for s in ladder.skipped if s.edit_kind == LEXICON_EDIT_KIND]
    assert lexicon_skips == [("p001", "synonym", LEXICON_EDIT_KIND)]
    assert "synonym/lexicon: 1/2 prompts: no word of the synonym lexicon" in show_ladder(ladder)


def test_curated_synonyms_replace_the_lexicon_and_edit_kinds_select_it(tmp_path):
    base = "ladder: x\n{kinds}prompts:\n  - id: a\n    text: Explain gravity.\n    curated:\n      synonym: [Describe gravity.]\n  - id: b\n    text: Explain light.\n"
    ladder = load_ladder(write(tmp_path / "a.yaml", base.format(kinds="")))
    assert {p.pair_id for p in ladder.pairs if p.rung == "synonym"} == {"a/synonym/curated", "b/synonym/lexicon"}
    ladder = load_ladder(write(tmp_path / "b.yaml", base.format(kinds="edit_kinds: [trailing_space]\n")))
    assert {p.pair_id for p in ladder.pairs if p.rung == "synonym"} == {"a/synonym/curated"}
    assert {p.rung for p in ladder.pairs} == {"identical", "noop_format", "synonym"}  # one topic: no control


def test_positive_control_is_unrelated_and_never_the_same_text(tmp_path):
    text = "Explain how bread rises.\nExplain how bread rises.\nWhy does bread rise in the oven?\nName three planets.\n"
    ladder = ladder_from_prompts(write(tmp_path / "p.txt", text))
    control = {p.prompt_id: p for p in ladder.pairs if p.rung == "positive_control"}
    assert all(p.prompt_a != p.prompt_b for p in control.values())
    # the bread prompts share content words; the planets prompt shares none
    assert control["p001"].prompt_b == "Name three planets." and control["p003"].prompt_b == "Name three planets."


def test_one_topic_leaves_no_positive_control_and_the_header_says_why(tmp_path):
    path = write(tmp_path / "p.json", json.dumps([{"id": i, "text": f"Prompt {i}.", "topic": "same"} for i in "ab"]))
    read = read_prompts_file(path)
    ladder = build_ladder(read.prompt_set)
    assert not [p for p in ladder.pairs if p.rung == "positive_control"]
    assert "positive_control: EMPTY (no prompt of another topic" in ladder_yaml(read.prompt_set, ladder)


def test_the_same_ladder_in_another_process_with_another_hash_seed():
    code = (
        "import hashlib,sys; from harness.ladder.prompts_file import ladder_from_prompts as f;"
        f"l=f({str(PROMPTS50)!r}); print(hashlib.sha256(repr((l.pairs,l.skipped)).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        digests.add(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())
    ladder = ladder_from_prompts(PROMPTS50)
    import hashlib

    assert digests == {hashlib.sha256(repr((ladder.pairs, ladder.skipped)).encode()).hexdigest()}


def test_rungs_order_is_unchanged():
    assert RUNGS[0] == "identical" and RUNGS[-1] == "positive_control"
