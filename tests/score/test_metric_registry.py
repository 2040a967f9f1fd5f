"""The pair-metric registry: one declaration reaches pairs.parquet, the summary means, the report and the gate.

The end-to-end test registers a trivial metric (the length difference of the two outputs), runs the demo
model tiny-chat on a two-prompt ladder at L = 8, finds the metric in every place, and removes it again.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from pydantic import ValidationError

from harness.gate.config import GateNeighbourhood, Thresholds
from harness.gate.records import ModelRun
from harness.gate.run import check_neighbourhood
from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.pipeline import RunConfig, run
from harness.score import registry
from harness.score.records import GateUse, MetricSpec, PairIdentity
from tests.conftest import demo_ladder, write

# pairs.parquet's columns as stabprobe has written them since answer correctness (scorer version 4): the
# registry must keep them, in this order, with these types (a changed column is a changed file format).
COLUMNS_V4 = {
    "model": "str", "variant": "str", "pair_id": "str", "prompt_id": "str", "rung": "str", "edit_kind": "str",
    "length": "int", "emb_dist": "float", "emb_dist_answer": "float", "tok_edit": "int", "tok_edit_norm": "float",
    "tok_edit_norm_answer": "float", "answer_missing": "bool", "first_div": "int", "lev_traj_max": "int",
    "lev_traj_mean": "float", "steps_above_shift": "int", "hidden_dist": "float", "len_a": "int", "len_b": "int",
    "answer_len_a": "int", "answer_len_b": "int", "scaffold_a": "str", "scaffold_b": "str", "min_margin_a": "float",
    "min_margin_b": "float", "div_margin_a": "float", "div_margin_b": "float", "div_margin_pct_a": "float",
    "div_delta_tcb_a": "float", "div_flip_radius_a": "float", "js": "float", "kl_ab": "float", "kl_ba": "float",
    "top1_flip": "bool", "top1_prob_a": "float", "top1_prob_b": "float", "margin_a": "float", "margin_b": "float",
    "prompt_key_a": "str", "prompt_key_b": "str", "correct_a": "float", "correct_b": "float", "answer_flip": "float",
    # the teacher-forced twin divergence (issue 36), both directions
    **{f"twin_{k}_{d}": "float" for d in ("ab", "ba")
       for k in ("kl", "kl_max", "top1_changed", "first_top1", "llr", "llr_tok")},
}
PANDAS_KIND = {"float": "f", "int": "i", "bool": "b", "str": "O"}

LEN_DIFF = MetricSpec(
    "len_diff", "int", lambda v: abs(len(v.ids_a) - len(v.ids_b)),
    "|len_a - len_b|: how many more tokens one side generated within the first L.",
    unit="tokens", aggregate="mean", better="lower",
    gate=GateUse("mean_len_diff", 0.0, None, "Mean length difference of the two outputs over the perturbed pairs."),
    report="length difference")

LADDER = demo_ladder("registry", ["trailing_space", "final_question"], in_domain=True)


def test_the_registry_keeps_pairs_parquet_as_it_was():
    cls = registry.pair_score_class()
    assert {f.name: f.type for f in dataclasses.fields(cls)} == COLUMNS_V4
    assert registry.pair_columns() == list(COLUMNS_V4)
    assert registry.PairScore is cls
    assert registry.summary_metrics() == ("emb_dist", "emb_dist_answer", "tok_edit_norm", "tok_edit_norm_answer",
                                          "hidden_dist", "js", "top1_flip",
                                          *(f"twin_{k}_{d}" for d in ("ab", "ba")
                                            for k in ("kl", "top1_changed", "llr", "llr_tok")))
    assert registry.determinism_columns() == (
        "emb_dist", "emb_dist_answer", "tok_edit", "tok_edit_norm", "tok_edit_norm_answer", "first_div", "lev_traj_max",
        "steps_above_shift", "hidden_dist", "js", "kl_ab", "kl_ba", "top1_flip",
        *(f"twin_{k}_{d}" for d in ("ab", "ba") for k in ("kl", "kl_max", "top1_changed", "llr", "llr_tok")))
    assert registry.answer_span_columns() == ("emb_dist_answer", "tok_edit_norm_answer")
    assert registry.optional_columns() == tuple(
        f"twin_{k}_{d}" for d in ("ab", "ba") for k in ("kl", "kl_max", "top1_changed", "first_top1", "llr", "llr_tok"))
    assert [(c, g.check) for c, g in registry.gate_metrics()] == [
        ("emb_dist", "mean_emb_dist"), ("top1_flip", "flip_rate"), ("answer_flip", "answer_flip_rate")]


def test_every_metric_is_documented():
    """test_layout's rule for records, for the fields that come from the registry: a doc, and a word on NaN
    where a float can be NaN is the metric's own business (an empty ``nan`` says "never NaN")."""
    for s in registry.metrics():
        assert s.doc.strip() and s.doc.strip().endswith("."), s.name
        assert (s.aggregate == "none") or s.better != "none", s.name  # an aggregated score says which way is better
    cls_doc = registry.pair_score_class().__doc__
    assert all(f"{s.name} ({s.dtype}): " in cls_doc for s in registry.metrics())
    assert {f.name for f in dataclasses.fields(PairIdentity)}.isdisjoint(s.name for s in registry.metrics())


@pytest.mark.parametrize("bad, message", [
    (dataclasses.replace(LEN_DIFF, name="emb_dist"), "already a pairs.parquet column"),
    (dataclasses.replace(LEN_DIFF, name="model"), "already a pairs.parquet column"),
    (dataclasses.replace(LEN_DIFF, aggregate="rate"), "does not fit dtype"),
    (dataclasses.replace(LEN_DIFF, nan="never"), "only a float column"),
    (dataclasses.replace(LEN_DIFF, doc=" "), "no doc"),
    (dataclasses.replace(LEN_DIFF, aggregate="none"), "needs an aggregate"),
    (dataclasses.replace(LEN_DIFF, gate=GateUse("flip_rate", 0.0, 1.0, "taken")), "is taken"),
])
def test_register_refuses_a_spec_that_does_not_fit(bad, message):
    with pytest.raises(ValueError, match=message):
        registry.register(bad)
    assert registry.pair_columns() == list(COLUMNS_V4)


def test_a_registered_metric_reaches_pairs_summary_report_and_gate(tmp_path):
    ladder = load_ladder(write(tmp_path / "registry.yaml", LADDER))
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    before = registry.scorer_version()
    with registry.registered(LEN_DIFF):
        assert registry.scorer_version() != before  # no cached scored table from before is reused
        res = run(RunConfig(models=tuple(models), ladder=ladder, out=tmp_path / "runs", lengths=(8,), progress=False,
                            cache_dir=tmp_path / "cache"))
        assert res.exit_code == 0
        pairs = pd.read_parquet(res.run_dir / "pairs.parquet")
        assert list(pairs.columns) == [*COLUMNS_V4, "len_diff"]
        assert [pairs[c].dtype.kind for c in pairs.columns] == [PANDAS_KIND[t] for t in [*COLUMNS_V4.values(), "int"]]
        assert (pairs["len_diff"] == (pairs["len_a"] - pairs["len_b"]).abs()).all() and len(pairs) > 0
        drift = pd.read_parquet(res.run_dir / "drift.parquet")
        assert "len_diff" in drift.columns  # drift is scored like pairs

        summary = json.loads((res.run_dir / "summary.json").read_text())
        for c in summary["cells"]:
            rows = pairs[(pairs["rung"] == c["rung"]) & (pairs["length"] == c["length"])]
            assert c["len_diff"]["mean"] == pytest.approx(rows["len_diff"].mean())
        report = (res.run_dir / "report.md").read_text()
        assert "| length difference |" in report

        t = Thresholds(max_mean_len_diff=3)
        assert t.limit("mean_len_diff") == 3.0
        with pytest.raises(ValidationError, match="expected a number >= 0"):
            Thresholds(max_mean_len_diff=-1)
        ids = tuple(pairs["pair_id"].unique())
        (check,) = check_neighbourhood(GateNeighbourhood("all", 8, Thresholds(max_mean_len_diff=1000.0), ids),
                                       ModelRun("tiny-chat", "bf16", "ok", "", 1.0, ""), pairs)
        perturbed = pairs[pairs["rung"] != "identical"]
        assert check.metric == "mean_len_diff" and check.passed
        assert check.value == pytest.approx(perturbed["len_diff"].mean()) and check.n_pairs == len(perturbed)

    assert registry.pair_columns() == list(COLUMNS_V4) and registry.scorer_version() == before
    assert "len_diff" not in registry.summary_metrics()
    with pytest.raises(ValidationError, match="unknown key"):
        Thresholds(max_mean_len_diff=3)
