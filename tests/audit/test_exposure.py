"""Tokenizer exposure: which edit kinds survive a model's chat template and tokenizer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.audit.tokens import audit_pairs
from harness.audit.exposure import EXPOSURE, exposure_table, exposure_text
from harness.ladder.prompts_file import ladder_from_prompts
from harness.audit.records import RenderPolicy
from tests.conftest import MODELS, write

EDGE_WHITESPACE = ("leading_space", "leading_newline", "trailing_space", "trailing_newline")
# Edits inside the prompt: no template trims them away.
INTERNAL = ("double_space", "zero_width_space", "comma_inserted", "parenthesized_word", "newline_in_sentence", "whitespace_run")
PROMPTS = """Explain why the sky looks blue during the day, and red at sunset.
What is the difference between a virus and a bacterium?
Give three tips for staying focused while studying. Keep them short.
Hello
"""


def _demo_dir() -> Path:
    # The committed demo model, or the same tokenizer kept outside the checkout until it is committed.
    for d in (MODELS / "tiny-chat", Path("/tmp/sp/tiny-chat")):
        if (d / "tokenizer.json").is_file():
            return d
    pytest.skip("demo tokenizer not found (models/tiny-chat)")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_demo_dir()))


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return ladder_from_prompts(write(tmp_path_factory.mktemp("p") / "prompts.txt", PROMPTS))


def _exposure(tokenizer, ladder, fixtures, template: str) -> dict[str, float]:
    policy = RenderPolicy(True, template_override=(fixtures / "chat_templates" / template).read_text(encoding="utf-8"))
    rows, _ = audit_pairs(template, tokenizer, policy, ladder.pairs)
    table = exposure_table(pd.DataFrame([r.__dict__ for r in rows]))
    return dict(zip(table["edit_kind"], table["share"]))


def test_edge_whitespace_survives_qwen3_and_is_erased_by_llama32(tokenizer, ladder, fixtures):
    qwen = _exposure(tokenizer, ladder, fixtures, "Qwen3-0.6B.jinja")
    llama = _exposure(tokenizer, ladder, fixtures, "llama-3.2-1B-Instruct.jinja")
    for kind in EDGE_WHITESPACE:
        assert qwen[kind] == 1.0, (kind, qwen)
        assert llama[kind] == 0.0, (kind, llama)  # `| trim` in the template
    for kind in INTERNAL:
        assert qwen[kind] == 1.0 and llama[kind] == 1.0, kind
    # indenting a one-line prompt is edge whitespace too
    assert qwen["indented_lines"] == 1.0 and llama["indented_lines"] == 0.0


def test_table_counts_and_exclusions():
    audit = pd.DataFrame(
        [
            ("m", "identical", "identical", True, ""),
            ("m", "noop_format", "trailing_space", False, "identical_after_template"),
            ("m", "noop_format", "trailing_space", True, ""),
            ("m", "noop_format", "double_space", False, "identical_input"),  # the edit did nothing: no exposure question
            ("m", "noop_format", "double_space", True, "exceeds_context"),
            ("m", "synonym", "reverse->invert", True, ""),
            ("m", "synonym", "lexicon", True, ""),
            ("n", "punctuation", "final_colon", True, ""),
        ],
        columns=["model", "rung", "edit_kind", "kept", "reason"],
    )
    t = exposure_table(audit)
    got = {(r.model, r.rung, r.edit_kind): (r.pairs, r.survived, r.share) for r in t.itertuples()}
    assert got == {
        ("m", "noop_format", "trailing_space"): (2, 1, 0.5),
        ("m", "synonym", "lexicon"): (1, 1, 1.0),
        ("m", "synonym", "curated"): (1, 1, 1.0),  # hand-written labels are one per pair: counted together
        ("n", "punctuation", "final_colon"): (1, 1, 1.0),
    }
    text = exposure_text(t)
    assert "0.50 (1/2)" in text and text.splitlines()[1].split()[-2:] == ["m", "n"]
    assert exposure_table(audit.iloc[:0]).empty and "no pairs" in exposure_text(exposure_table(audit.iloc[:0]))


def test_audit_command_prints_and_writes_the_exposure_table(tmp_path, capsys):
    from harness.cli import main

    prompts = write(tmp_path / "prompts.txt", PROMPTS)
    rc = main(["audit", "--models", str(_demo_dir()), "--prompts", str(prompts), "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "tokenizer exposure" in out and "trailing_space" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    table = pd.read_parquet(run_dir / EXPOSURE)
    assert set(table.columns) >= {"model", "rung", "edit_kind", "pairs", "survived", "share"}
    # the demo model's own template keeps edge whitespace
    assert table.loc[table.edit_kind == "trailing_space", "share"].tolist() == [1.0]
    assert (run_dir / "audit.parquet").is_file()
