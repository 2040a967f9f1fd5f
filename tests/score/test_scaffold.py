"""Answer-span extraction on every scaffold form, and the -nothink variant grammar."""

import json
from pathlib import Path

import pytest

from harness.models.registry import Scaffold
from harness.score.scaffold import answer_start_token, split_text
from harness.models.variants import parse_variant

THINK = Scaffold(open="<think>", close="</think>")
TEMPLATE_OPENED = Scaffold(open=None, close="</think>", opened_by_template=True)
PREAMBLE = Scaffold(open="Thinking Process:", close="\n\n", answer_markers=("Final Answer:",))


def answer(text, scaffold):
    s = split_text(text, scaffold)
    return s.status, text[s.answer_char:]


@pytest.mark.parametrize(
    "text, scaffold, expected",
    [
        ("<think>\nthe word is apple.\n</think>\n\nelppa", THINK, ("closed", "elppa")),
        ("  <think>x</think>answer", THINK, ("closed", "answer")),
        ("<think>\nloops forever", THINK, ("unclosed", "")),
        ("elppa", THINK, ("absent", "elppa")),
        ("</think>\n\nwonest", THINK, ("closed", "wonest")),
        ("elppa", None, ("none", "elppa")),
        ("reasoning goes here</think>\n\nParis", TEMPLATE_OPENED, ("closed", "Paris")),
        ("reasoning that never ends", TEMPLATE_OPENED, ("unclosed", "")),
        ("Thinking Process:\n\n1. Read.\n2. Add.\n\nThe answer is 12.", PREAMBLE, ("closed", "The answer is 12.")),
        ("Thinking Process:\n\n1. Read.\nFinal Answer: 12", PREAMBLE, ("closed", "12")),
        ("Thinking Process:\n\n1. Read and read", PREAMBLE, ("unclosed", "")),
        ("The answer is 12.", PREAMBLE, ("absent", "The answer is 12.")),
    ],
)
def test_answer_span_on_each_form(text, scaffold, expected):
    assert answer(text, scaffold) == expected


def test_answer_start_maps_back_to_tokens(demo_tokenizer):
    text = "<think>\nthe word is apple. reversed it is elppa.\n</think>\n\nelppa"
    ids = demo_tokenizer(text, add_special_tokens=False)["input_ids"]
    dec = lambda x: demo_tokenizer.decode(x, skip_special_tokens=False)  # noqa: E731
    status, k = answer_start_token(ids, dec, THINK)
    assert status == "closed" and dec(ids[k:]) == "elppa"
    assert dec(ids[:k]).endswith("</think>\n\n")
    assert answer_start_token(ids[:5], dec, THINK) == ("unclosed", 5)
    assert answer_start_token(ids, dec, None) == ("none", 0)


def test_variant_grammar():
    assert parse_variant("bf16").template_overrides == {}
    v = parse_variant("int4-nothink")
    assert v.weights == "int4" and v.template_overrides == {"enable_thinking": False}
    for bad in ("bf8", "bf16-think", "nothink", ""):
        with pytest.raises(ValueError, match="unknown variant"):
            parse_variant(bad)


# --- registry scaffold specs against published templates ----------------------

TOKENIZERS = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers"
"""The published tokenizers (with their chat templates) copied into the repository (tests/fixtures/tokenizers/README.md)."""


def _registry():
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    return load_registry(DEFAULT_REGISTRY).by_name()


def test_qwen35_multi_paragraph_trace_is_not_split_at_the_first_blank_line():
    scaffold = _registry()["qwen3.5-0.8b"].scaffold
    text = ("Thinking Process:\n\n1.  **Analyze the Request:** the user asks for a capital.\n\n"
            "2.  **Draft:** Paris is the capital of France.\n\n3.  **Check:** fine.\n\nThe capital of France is Paris.")
    status, rest = answer(text, scaffold)
    # Before: "closed" with the answer starting at "2.  **Draft:**", inside the reasoning.
    assert (status, rest) == ("unclosed", "")


def _render(tokenizer, template: str, **kwargs) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], chat_template=template,
                                         add_generation_prompt=True, tokenize=False, **kwargs)


def test_every_scaffold_entry_is_checked_against_a_published_template_or_says_it_is_not(demo_tokenizer):
    reg = _registry()
    qwen3 = json.loads((TOKENIZERS / "qwen3" / "tokenizer_config.json").read_text())["chat_template"]
    checked = set()
    for name, entry in reg.items():
        sc = entry.scaffold
        if sc is None:
            continue
        if name == "tiny-think":
            template = (Path(entry.source) / "chat_template.jinja").read_text()
            prompt = _render(demo_tokenizer, template, **entry.chat_template_kwargs)
            assert prompt.rstrip().endswith(sc.open) == sc.opened_by_template
            checked.add(name)
        elif entry.family == "qwen3.5":
            # Qwen3's published template (the closest relative here; the entry's notes record that the
            # 0.8B-9B templates behave the same): with thinking off it writes the *closed* empty think block,
            # so the plain-text preamble has no template delimiter and its end is not known.
            prompt = _render(demo_tokenizer, qwen3, **entry.chat_template_kwargs)
            assert prompt.endswith("<think>\n\n</think>\n\n")
            assert sc.open not in qwen3 and sc.close is None and not sc.opened_by_template
            assert "SCAFFOLD END UNKNOWN" in entry.notes
            checked.add(name)
        else:
            assert "not checked against a published template" in (entry.notes or ""), name
    assert {"tiny-think", "qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b", "qwen3.5-9b"} <= checked
    # the Qwen3 template's own think tags, for an entry that would run with thinking on
    on = _render(demo_tokenizer, qwen3, enable_thinking=True)
    assert not on.endswith("<think>\n") and "</think>" in qwen3
