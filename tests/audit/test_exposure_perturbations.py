"""Exposure of the seeded rungs: which of the casing, format, typo, filler and option-order kinds a tokenizer family erases."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from transformers import AutoTokenizer

from harness.audit.exposure import exposure_table
from harness.audit.records import RenderPolicy
from harness.audit.tokens import audit_pairs
from harness.ladder.edits import EDIT_KINDS
from harness.ladder.load import load_ladder
from harness.ladder.records import SEEDED_RUNGS
from tests.conftest import MODELS, ROOT


def test_a_lowercasing_tokenizer_erases_the_casing_kinds_only(tmp_path, fixtures):
    cased = tmp_path / "cased"
    shutil.copytree(MODELS / "tiny-chat", cased, ignore=shutil.ignore_patterns("*.safetensors"))
    uncased = tmp_path / "uncased"
    shutil.copytree(cased, uncased)
    spec = json.loads((uncased / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"] = {"type": "Lowercase"}  # what uncased tokenizer families do before splitting
    (uncased / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    ladder = load_ladder(ROOT / "ladders" / "perturbations.yaml")
    template = (fixtures / "chat_templates" / "Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    share = {}
    for name, d in (("cased", cased), ("uncased", uncased)):
        rows, _ = audit_pairs(name, AutoTokenizer.from_pretrained(str(d)), RenderPolicy(True, template_override=template),
                              ladder.pairs)
        table = exposure_table(pd.DataFrame([r.__dict__ for r in rows]))
        share[name] = dict(zip(table["edit_kind"], table["share"]))
    new = [k.name for k in EDIT_KINDS if k.rung in SEEDED_RUNGS and k.name in share["cased"]]
    assert len(new) == 18  # every seeded kind the demo ladder makes is in the table
    assert all(share["cased"][k] == 1.0 for k in new)
    erased = {k for k in new if share["uncased"][k] == 0.0}
    assert erased == {"lowercase_all", "first_letter_lowercased", "word_uppercased", "format_field_casing"}
    assert all(share["uncased"][k] == 1.0 for k in new if k not in erased)
