"""Expected answers in ladders and pair files: loaded onto both sides, moved by option_order, bad ones refused (exit 2)."""

import json
import random

import pytest

from harness.cli import main
from harness.demo.corpus import canonical_examples
from harness.ladder.edits import seed_for
from harness.ladder.load import DEFAULT_LADDER, load_ladder
from harness.ladder.options import reorder_options
from harness.score.answers import is_correct
from tests.conftest import write

CHOICE = ("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Mercury\nAnswer with the letter.")


def _ladder(tmp_path, prompt_keys: str, extra: str = "") -> str:
    return write(tmp_path / "l.yaml", "ladder: x\nedit_kinds: [option_order, noop_format]\nprompts:\n"
                 f"  - id: q1\n    text: {json.dumps(CHOICE)}\n{prompt_keys}{extra}")


def test_option_order_moves_the_expected_letter_with_its_option(tmp_path):
    ladder = load_ladder(_ladder(tmp_path, "    answer: B\n    check: choice\n"))
    moved = [p for p in ladder.pairs if p.rung == "option_order"]
    assert moved, "the prompt has options: option_order must make a pair"
    for p in moved:
        assert p.answer_a == "B" and p.check == "choice"
        line = next(ln for ln in p.prompt_b.split("\n") if ln.startswith(f"{p.answer_b}."))
        assert line.endswith("Jupiter"), (p.answer_b, p.prompt_b)  # the new label still names the right option
        assert p.answer_b == reorder_options(CHOICE, random.Random(seed_for("x", "q1", "option_order", "option_order")),
                                             answer="B").answer
    same = [p for p in ladder.pairs if p.rung in ("identical", "noop_format")]
    assert same and all(p.answer_b == "B" for p in same)


def test_relabelled_options_move_a_choice_answer_or_make_it_unknown(tmp_path):
    path = write(tmp_path / "l.yaml", "ladder: x\nedit_kinds: [lowercase_all, format_enumeration]\nprompts:\n"
                 f"  - id: q1\n    text: {json.dumps(CHOICE)}\n    answer: B\n    check: choice\n")
    pairs = {p.edit_kind: p for p in load_ladder(path).pairs}
    assert "ii. Jupiter" in pairs["format_enumeration"].prompt_b
    assert pairs["format_enumeration"].answer_b is None  # relabelled i, ii, ...: no letter names it, unknown
    assert "b. jupiter" in pairs["lowercase_all"].prompt_b and pairs["lowercase_all"].answer_b == "B"


def test_task_changing_rungs_have_no_side_b_answer_unless_curated(tmp_path):
    path = write(tmp_path / "l.yaml", "ladder: x\nedit_kinds: [noop_format]\nprompts:\n"
                 "  - id: add\n    text: What is 2 plus 2?\n    answer: 4\n    check: number\n    topic: m\n"
                 "    curated:\n      semantic_small: [{text: 'What is 2 plus 3?', edit_kind: changed, answer: 5}]\n"
                 "      paraphrase: [Add 2 and 2.]\n"
                 "  - id: sky\n    text: What colour is the sky?\n    topic: n\n")
    pairs = {p.pair_id: p for p in load_ladder(path).pairs}
    assert (pairs["add/semantic_small/changed"].answer_a, pairs["add/semantic_small/changed"].answer_b) == ("4", "5")
    assert pairs["add/paraphrase/curated"].answer_b == "4"
    assert pairs["add/positive_control/unrelated_prompt"].answer_b is None  # another task: unknown, never guessed
    assert all(p.answer_a is None and p.check is None for p in pairs.values() if p.prompt_id == "sky")


def test_pair_file_carries_answers(tmp_path):
    path = write(tmp_path / "p.json", json.dumps([
        {"id": "a", "category": "paraphrase", "prompt_a": "2+2?", "prompt_b": "Two plus two?", "answer": 4,
         "check": "number", "tolerance": 0.5},
        {"id": "b", "category": "semantic_small", "prompt_a": "2+2?", "prompt_b": "2+3?", "answer": "4",
         "answer_b": "5", "check": "number"},
        {"id": "c", "category": "positive_control", "prompt_a": "2+2?", "prompt_b": "Tell a joke.", "answer": "4",
         "check": "number"},
        {"id": "d", "category": "noop_format", "prompt_a": "x", "prompt_b": "x "},
    ]))
    p = {q.pair_id: q for q in load_ladder(path).pairs}
    assert (p["a"].answer_a, p["a"].answer_b, p["a"].check, p["a"].tolerance) == ("4", "4", "number", 0.5)
    assert (p["b"].answer_a, p["b"].answer_b) == ("4", "5")
    assert (p["c"].answer_a, p["c"].answer_b) == ("4", None)
    assert p["d"].answer_a is None and p["d"].check is None


@pytest.mark.parametrize("keys, field, message", [
    ("    answer: '([a-z'\n    check: regex\n", "prompts[0].answer", "regex does not compile"),
    ("    answer: B\n    check: fuzzy\n", "prompts[0].check", "unknown check 'fuzzy'"),
    ("    answer: B\n    check: choice\n    tolerance: 0.1\n", "prompts[0].tolerance", "only a `number` check takes a tolerance"),
    ("    answer: Jupiter\n    tolerance: 1\n", "prompts[0].tolerance", "only a `number` check takes a tolerance"),
    ("    answer: twelve\n    check: number\n", "prompts[0].answer", "not a number"),
    ("    answer: E\n    check: choice\n", "prompts[0].answer", "not one of the prompt's option labels"),
    ("    check: exact\n", "prompts[0].check", "given without an `answer`"),
    ("    answer: 4\n    check: number\n    tolerance: -1\n", "prompts[0].tolerance", "expected a finite number >= 0"),
])
def test_bad_answer_in_a_ladder_exits_2_naming_file_and_field(tmp_path, capsys, keys, field, message):
    path = _ladder(tmp_path, keys)
    out = tmp_path / "runs"
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert f"{path}: {field}: " in err and message in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("item, field, message", [
    ({"answer": "[", "check": "regex"}, "[0].answer", "regex does not compile"),
    ({"answer": "x", "check": "soundex"}, "[0].check", "unknown check"),
    ({"answer": "x", "check": "contains", "tolerance": 2}, "[0].tolerance", "only a `number` check takes a tolerance"),
    ({"answer_b": "x"}, "[0].answer_b", "given without an `answer`"),
])
def test_bad_answer_in_a_pair_file_exits_2(tmp_path, capsys, item, field, message):
    path = write(tmp_path / "p.json", json.dumps([{"id": "a", "category": "paraphrase", "prompt_a": "x", "prompt_b": "y",
                                                   **item}]))
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(path), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{path}: {field}: " in err and message in err, err


def test_curated_answer_needs_a_base_answer(tmp_path):
    from harness.errors import InputError

    path = write(tmp_path / "l.yaml", "ladder: x\nprompts:\n  - id: a\n    text: hi there\n"
                 "    curated:\n      semantic_small: [{text: bye there, edit_kind: k, answer: x}]\n")
    with pytest.raises(InputError) as err:
        load_ladder(path)
    assert "prompts[0].curated.semantic_small[0].answer" in err.value.one_line()


def test_default_ladder_answers_are_the_demo_tasks_answers():
    """Each in-domain prompt's check accepts the corpus answer, as the chat model and as the base model says it."""
    ladder = load_ladder(DEFAULT_LADDER)
    by_text = {p.text: p for p in ladder.prompts}
    examples = canonical_examples()
    assert len(examples) == 8
    for ex in examples:
        spec = by_text[ex.prompt].expected
        assert spec is not None, ex.prompt
        assert is_correct(ex.answer, spec) and is_correct(f"The answer is {ex.answer}.", spec), (ex.prompt, spec)
        assert not is_correct("I do not know.", spec)
    assert all(p.expected is None for p in ladder.prompts if not p.in_domain)
