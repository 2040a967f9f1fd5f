"""The rung table (harness.ladder.records.RUNG_TABLE) is the one place a rung is declared."""

from __future__ import annotations

import ast
import re
from typing import get_args

import pytest

import harness.gate.schema
from harness.ladder import build
from harness.ladder.records import (
    CONTROL_RUNGS,
    CURATED_RUNGS,
    MECHANICAL_RUNGS,
    NEGATIVE_CONTROL,
    NOISE_FLOOR,
    POSITIVE_CONTROL,
    RUNG_TABLE,
    RUNGS,
    SEEDED_RUNGS,
    TASK_CHANGING_RUNGS,
    Rung,
    rung_info,
    rung_order,
)
from tests.conftest import ROOT


def test_the_literal_and_the_table_name_the_same_rungs_in_the_same_order():
    # A Literal cannot be built from the table for type checkers: this keeps the two in step.
    assert get_args(Rung) == RUNGS == tuple(r.name for r in RUNG_TABLE)
    assert [rung_info(r).order for r in RUNGS] == list(range(len(RUNGS)))
    assert rung_order("drift") == len(RUNGS)  # a label that is no rung sorts after every rung


def test_the_derived_groups_are_the_ones_the_harness_has_always_used():
    assert (NOISE_FLOOR, NEGATIVE_CONTROL, POSITIVE_CONTROL) == ("identical", "noop_format", "positive_control")
    assert CONTROL_RUNGS == ("identical", "positive_control")
    assert MECHANICAL_RUNGS == ("noop_format", "punctuation", "structural")
    assert SEEDED_RUNGS == ("casing", "format", "typo", "filler", "option_order")
    assert CURATED_RUNGS == ("synonym", "paraphrase", "semantic_small", "positive_control")
    assert TASK_CHANGING_RUNGS == ("semantic_small", "positive_control")
    assert [r for r in RUNGS if rung_info(r).curated_only] == ["paraphrase", "semantic_small"]


def test_edit_kinds_have_one_rung_table():
    assert harness.gate.schema.KIND_RUNG is build.KIND_RUNG
    with_kinds = {r for r in RUNGS if rung_info(r).has_edit_kinds}
    assert set(build.KIND_RUNG.values()) == with_kinds


def test_an_unknown_rung_is_named():
    with pytest.raises(KeyError, match="unknown rung 'typos'.*identical, noop_format"):
        rung_info("typos")


def test_the_readme_lists_the_rungs_in_table_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The rungs", 1)[1].split("\n## ", 1)[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", section, flags=re.M)) == RUNGS


CONTROL_NAMES = {NOISE_FLOOR, NEGATIVE_CONTROL, POSITIVE_CONTROL}
DERIVED = ["audit", "score", "summary", "report", "gate"]


def test_no_stage_above_the_ladder_spells_a_control_rung():
    """The noise floor and the controls are read from the table (NOISE_FLOOR, ...), never written as strings."""
    found = []
    files = [p for d in DERIVED for p in (ROOT / "harness" / d).rglob("*.py")] + [ROOT / "harness" / "compare.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in CONTROL_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found


def test_a_ladder_file_takes_curated_variants_on_exactly_the_curated_rungs():
    from harness.ladder.load import CuratedSet

    assert tuple(CuratedSet.model_fields) == CURATED_RUNGS
