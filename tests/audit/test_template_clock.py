"""The chat-template clock: templates that write today's date see a frozen one, and say that they read it.

Real components: the demo tokenizer and transformers' own template renderer;
the templates are written here in the style of Llama 3.2 / SmolLM3, which call
``strftime_now`` (nothing is mocked).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from harness.ladder.load import load_ladder
from harness.run.pipeline import RunConfig, run
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.audit.render import render_prompt
from harness.audit.records import RenderPolicy
from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE, template_clock

DATED = (
    "{{ bos_token }}{% if strftime_now is defined %}Today Date: {{ strftime_now('%d %b %Y') }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
UNDATED = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def _render(tok, template: str, date: str | None = None):
    policy = RenderPolicy(True, template_override=template) if date is None else \
        RenderPolicy(True, template_override=template, template_date=date)
    return render_prompt(tok, "What is 2 + 2?", policy)


def test_default_policy_freezes_the_date_and_records_the_read(demo_tokenizer):
    r = _render(demo_tokenizer, DATED)
    frozen = dt.date.fromisoformat(DEFAULT_TEMPLATE_DATE).strftime("%d %b %Y")
    assert f"Today Date: {frozen}\n" in r.text
    assert r.reads_clock is True


def test_an_explicit_date_is_what_the_template_sees(demo_tokenizer):
    a = _render(demo_tokenizer, DATED, "2025-03-04")
    b = _render(demo_tokenizer, DATED, "2025-03-05")
    assert "Today Date: 04 Mar 2025\n" in a.text and "Today Date: 05 Mar 2025\n" in b.text
    assert a.token_ids != b.token_ids  # the reason it is pinned: one day later, other tokens


def test_today_uses_the_real_clock_and_still_records_the_read(demo_tokenizer):
    before = dt.datetime.now().strftime("%d %b %Y")
    r = _render(demo_tokenizer, DATED, "today")
    after = dt.datetime.now().strftime("%d %b %Y")
    assert f"Today Date: {before}\n" in r.text or f"Today Date: {after}\n" in r.text
    assert r.reads_clock is True


def test_a_template_without_dates_reads_no_clock(demo_tokenizer):
    r = _render(demo_tokenizer, UNDATED)
    assert r.reads_clock is False and "Today" not in r.text


def test_the_real_clock_is_restored_after_the_block_even_on_error():
    from transformers.utils import chat_template_utils as ctu

    real = ctu.datetime
    with pytest.raises(KeyError):
        with template_clock("2020-02-29"):
            assert ctu.datetime is not real
            raise KeyError("boom")
    assert ctu.datetime is real


def test_run_records_whether_templates_read_the_clock(tmp_path):
    reg = load_registry(DEFAULT_REGISTRY).by_name()
    ladder = load_ladder("ladders/default.yaml")
    small = dataclasses.replace(ladder, pairs=ladder.pairs[:4])
    res = run(RunConfig(models=(reg["tiny-chat"],), ladder=small, out=tmp_path, lengths=(4,), progress=False))
    manifest = json.loads((res.run_dir / "manifest.json").read_text(encoding="utf-8"))
    cell = manifest["models"][0]
    assert cell["template_reads_clock"] is False  # the demo template never asks for the date
    assert cell["template_date"] == DEFAULT_TEMPLATE_DATE


def test_nested_blocks_restore_the_outer_date():
    from transformers.utils import chat_template_utils as ctu

    probe = ctu._compile_jinja_template("{{ strftime_now('%Y-%m-%d') }}")
    real = ctu.datetime
    with template_clock("2020-01-01") as outer:
        with template_clock("2021-06-15") as inner:
            assert probe.render() == "2021-06-15"
        assert probe.render() == "2020-01-01"
    assert ctu.datetime is real
    assert (outer.count, inner.count) == (1, 1)
