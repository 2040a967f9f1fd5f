"""Answer-span extraction on every scaffold form, and the -nothink variant grammar."""

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
