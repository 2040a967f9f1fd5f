"""Token audit with the demo tokenizer under real published chat templates."""

import pytest

from harness.audit.tokens import IDENTICAL_AFTER_TEMPLATE, IDENTICAL_INPUT, audit_pairs, first_difference
from harness.ladder.records import PromptPair
from harness.audit.render import MissingChatTemplate, render_prompt
from harness.audit.records import RenderPolicy

BASE = "Write a concise Python function that checks whether a string is a palindrome."


def _pairs():
    return [
        PromptPair("id", "p", "identical", "identical", BASE, BASE, "generated"),
        PromptPair("lead", "p", "noop_format", "leading_space", BASE, " " + BASE, "generated"),
        PromptPair("trail", "p", "noop_format", "trailing_newline", BASE, BASE + "\n", "generated"),
        PromptPair("para", "p", "punctuation", "parenthesized_word", BASE, BASE.replace("concise", "(concise)"), "generated"),
        PromptPair("same", "p", "synonym", "curated", BASE, BASE, "curated"),
    ]


def _template(fixtures, name):
    return (fixtures / "chat_templates" / name).read_text(encoding="utf-8")


def test_trimming_template_erases_edge_whitespace(demo_tokenizer, fixtures):
    policy = RenderPolicy(True, template_override=_template(fixtures, "llama-3.2-1B-Instruct.jinja"))
    rows, _ = audit_pairs("demo", demo_tokenizer, policy, _pairs())
    by = {r.pair_id: r for r in rows}
    assert not by["lead"].kept and by["lead"].reason == IDENTICAL_AFTER_TEMPLATE
    assert not by["trail"].kept and by["trail"].reason == IDENTICAL_AFTER_TEMPLATE
    assert by["para"].kept
    assert by["id"].kept  # the noise floor is never dropped
    assert by["same"].reason == IDENTICAL_INPUT


def test_non_trimming_template_keeps_edge_whitespace(demo_tokenizer, fixtures):
    policy = RenderPolicy(True, template_override=_template(fixtures, "Qwen3-0.6B.jinja"))
    rows, rendered = audit_pairs("demo", demo_tokenizer, policy, _pairs())
    by = {r.pair_id: r for r in rows}
    assert by["lead"].kept and by["trail"].kept and by["para"].kept
    assert by["lead"].first_diff >= 0
    # the first differing token sits where the user content starts, after the template's prefix
    prefix = rendered[BASE].text.index(BASE)
    assert by["lead"].first_diff > 0 and prefix > 0


def test_demo_template_keeps_whitespace_and_honours_enable_thinking(demo_tokenizer):
    on = render_prompt(demo_tokenizer, "hi ", RenderPolicy(True, {"enable_thinking": True}))
    off = render_prompt(demo_tokenizer, "hi ", RenderPolicy(True, {"enable_thinking": False}))
    assert "hi <|im_end|>" in on.text
    assert off.text.endswith("<think>\n\n</think>\n\n") and not on.text.endswith("</think>\n\n")
    assert off.token_ids[: len(on.token_ids)] == on.token_ids


def test_raw_policy_and_missing_template(demo_tokenizer):
    raw = render_prompt(demo_tokenizer, BASE, RenderPolicy(False))
    assert raw.text == BASE
    import copy

    tok = copy.deepcopy(demo_tokenizer)
    tok.chat_template = None
    with pytest.raises(MissingChatTemplate, match="chat_template: none"):
        render_prompt(tok, BASE, RenderPolicy(True))


def test_context_overflow_is_recorded(demo_tokenizer):
    rows, _ = audit_pairs("demo", demo_tokenizer, RenderPolicy(True), _pairs(), context_len=40, max_new_tokens=30)
    assert all(not r.kept and r.reason == "exceeds_context" for r in rows)


def test_first_difference():
    assert first_difference((1, 2, 3), (1, 2, 3)) == -1
    assert first_difference((1, 2, 3), (1, 5, 3)) == 1
    assert first_difference((1, 2), (1, 2, 3)) == 2
