"""Published tokenizers and chat templates (Qwen3, Llama 3, Gemma 3): audit, BOS, thinking control, clock.

Everything runs through the real files in tests/fixtures/tokenizers/ and the
harness's own rendering (harness.render), audit and scaffold splitting.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from fixtures.real_models import LLAMA_3_2_DATED
from harness.audit import exposure_doc
from harness.audit.tokens import IDENTICAL_AFTER_TEMPLATE, KEPT, audit_pairs
from harness.ladder.load import load_ladder
from harness.audit.render import render_prompt
from harness.audit.records import RenderPolicy
from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE
from harness.models.registry import Scaffold
from harness.models.variants import parse_variant
from harness.score.scaffold import answer_start_token

EDGE_KINDS = ("trailing_space", "leading_space", "leading_newline", "trailing_newline")
THINK = Scaffold(open="<think>", close="</think>")


@pytest.fixture(scope="module")
def default_ladder(root):
    return load_ladder(root / "ladders" / "default.yaml")


@pytest.fixture(scope="module")
def audits(real_tokenizer, default_ladder):
    return {f: {r.pair_id: r for r in audit_pairs(f, real_tokenizer(f), RenderPolicy(True), default_ladder.pairs)[0]}
            for f in ("qwen3", "llama3_1", "gemma3")}


def test_qwen3_keeps_every_edge_whitespace_edit(audits, default_ladder):
    rows = audits["qwen3"]
    edge = [p for p in default_ladder.pairs if p.edit_kind in EDGE_KINDS]
    assert len(edge) == 4 * len(default_ladder.prompts)
    assert all(rows[p.pair_id].kept for p in edge)
    assert all(r.kept for r in rows.values())  # Qwen3's template writes the message as is: nothing is erased


@pytest.mark.parametrize("family", ["llama3_1", "gemma3"])
def test_trimming_templates_erase_exactly_the_edits_at_the_edges(audits, default_ladder, family):
    rows = audits[family]
    edge = [p for p in default_ladder.pairs if p.edit_kind in EDGE_KINDS]
    assert edge and all(rows[p.pair_id].reason == IDENTICAL_AFTER_TEMPLATE for p in edge)
    for p in default_ladder.pairs:
        if p.rung == "identical":
            assert rows[p.pair_id].kept  # the noise floor is never dropped
            continue
        # `| trim` is str.strip(): a pair is erased iff its prompts differ only in edge whitespace.
        same_after_trim = p.prompt_a.strip() == p.prompt_b.strip()
        assert (rows[p.pair_id].reason == IDENTICAL_AFTER_TEMPLATE) == same_after_trim, (p.pair_id, p.edit_kind)
        assert rows[p.pair_id].reason in (KEPT, IDENTICAL_AFTER_TEMPLATE)


@pytest.mark.parametrize("family", ["gemma3", "llama3_1"])
def test_bos_appears_exactly_once_in_the_rendered_ids(real_tokenizer, family):
    tok = real_tokenizer(family)
    r = render_prompt(tok, "What is the capital of France?", RenderPolicy(True))
    assert r.token_ids[0] == tok.bos_token_id
    assert r.token_ids.count(tok.bos_token_id) == 1
    # The trap the harness avoids: the template writes BOS, and the tokenizer's default adds another.
    assert tok(r.text)["input_ids"][:2] == [tok.bos_token_id] * 2


def test_qwen3_thinking_off_writes_the_empty_think_block(real_tokenizer):
    tok = real_tokenizer("qwen3")
    think, end = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("</think>")
    prompt = "What is 2 + 2?"
    on = render_prompt(tok, prompt, RenderPolicy(True))
    off = render_prompt(tok, prompt, RenderPolicy(True, dict(parse_variant("bf16-nothink").template_overrides)))
    assert on.text.endswith("<|im_start|>assistant\n") and think not in on.token_ids
    assert off.text == on.text + "<think>\n\n</think>\n\n"
    assert off.token_ids[: len(on.token_ids)] == on.token_ids
    tail = off.token_ids[len(on.token_ids):]
    assert tail[0] == think and tail.count(think) == 1 and tail.count(end) == 1
    assert tok.decode(list(tail), skip_special_tokens=False) == "<think>\n\n</think>\n\n"


@pytest.mark.parametrize("skip_special", [False, True], ids=["keep-special", "skip-special"])
def test_scaffold_split_on_the_real_think_ids(real_tokenizer, skip_special):
    tok = real_tokenizer("qwen3")
    think, end, eos = (tok.convert_tokens_to_ids(t) for t in ("<think>", "</think>", "<|im_end|>"))
    ids = tok.encode("<think>\nTwo plus two.\n</think>\n\nThe answer is 4.", add_special_tokens=False) + [eos]
    assert ids[0] == think and ids.count(end) == 1  # the tags are single added tokens, not pieces
    decode = lambda x: tok.decode(list(x), skip_special_tokens=skip_special)  # noqa: E731
    status, start = answer_start_token(ids, decode, THINK)
    assert status == "closed"
    assert ids[start - 2] == end  # "</think>" then the "\n\n" token, then the answer
    assert decode(ids[start:]) == "The answer is 4." + ("" if skip_special else "<|im_end|>")
    # Unclosed: the answer span is empty; thinking off (no tags in the output): the whole output.
    cut = ids[: ids.index(end)]
    assert answer_start_token(cut, decode, THINK) == ("unclosed", len(cut))
    plain = tok.encode("The answer is 4.", add_special_tokens=False)
    assert answer_start_token(plain, decode, THINK) == ("absent", 0)


def test_template_clock_on_a_dated_llama_template(real_tokenizer):
    tok = real_tokenizer("llama3_1")
    dated = dict(template_override=LLAMA_3_2_DATED)
    frozen = render_prompt(tok, "Hello", RenderPolicy(True, **dated))
    day = dt.date.fromisoformat(DEFAULT_TEMPLATE_DATE).strftime("%d %b %Y")
    assert f"Cutting Knowledge Date: December 2023\nToday Date: {day}\n\n" in frozen.text
    assert frozen.reads_clock is True
    assert frozen.token_ids.count(tok.bos_token_id) == 1
    again = render_prompt(tok, "Hello", RenderPolicy(True, **dated))
    other = render_prompt(tok, "Hello", RenderPolicy(True, template_date="2025-03-04", **dated))
    assert again.token_ids == frozen.token_ids
    assert "Today Date: 04 Mar 2025\n" in other.text and other.token_ids != frozen.token_ids
    # The shipped Llama 3.1 template has no date: same vocabulary, no read.
    assert render_prompt(tok, "Hello", RenderPolicy(True)).reads_clock is False


def test_exposure_doc_is_current(root, real_tokenizer):
    """docs/exposure-real-tokenizers.md is what `python -m harness.exposure_doc` writes today."""
    toks = {f: real_tokenizer(f) for f in exposure_doc.FAMILIES}
    ladders = [(p, exposure_doc.load_ladder_file(root / p)) for p in exposure_doc.LADDERS]
    fresh = exposure_doc.render_doc(toks, ladders)
    committed = (root / "docs" / "exposure-real-tokenizers.md").read_text(encoding="utf-8")
    drop = lambda text: [ln for ln in text.splitlines() if not ln.startswith(exposure_doc.VERSIONS)]  # noqa: E731
    assert drop(committed) == drop(fresh), f"stale: regenerate with `{exposure_doc.COMMAND}`"
    # Qwen3 keeps every trailing space, Llama 3 and Gemma 3 none (whatever the ladder's size)
    assert re.search(r"^\| noop_format \| trailing_space \| 1\.00 \((\d+)/\1\) \| 0\.00 \(0/\1\) \| 0\.00 \(0/\1\) \|$",
                     fresh, re.M)
