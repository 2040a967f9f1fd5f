"""Ranking stability (harness.summary.ranking): a planted flip on one rung is found there and nowhere else; tau-b
agrees with scipy; one unit has nothing to rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.summary.ranking import _tau_b, ranking_stability, ranking_table

RUNGS = ["noop_format", "punctuation", "casing", "typo"]


def _planted(rng, flip_rung="typo", n_prompts=40, edits=2, third=False):
    """Model x is more accurate and more stable than y everywhere except on ``flip_rung``'s perturbed side, where the
    order reverses (accuracy 0.85 vs 0.3 on the originals; on the flipped rung's side b 0.2 vs 0.75; distances 0.1 vs
    0.3, reversed there). ``third``: a model z worse than both everywhere, which never moves in the order."""
    acc_a = {"x": 0.85, "y": 0.3, "z": 0.0}
    dist = {"x": 0.1, "y": 0.3, "z": 0.6}
    rows = []
    for model in ("x", "y", "z") if third else ("x", "y"):
        for p in range(n_prompts):
            for rung in RUNGS:
                for e in range(edits):
                    flipped = rung == flip_rung and model in ("x", "y")
                    pb = {"x": 0.2, "y": 0.75}[model] if flipped else acc_a[model]
                    d = {"x": 0.4, "y": 0.1}[model] if flipped else dist[model]
                    rows.append({"model": model, "variant": "bf16", "length": 32, "rung": rung,
                                 "prompt_id": f"p{p:03d}", "pair_id": f"p{p:03d}/{rung}/{e}",
                                 "correct_a": float(rng.random() < acc_a[model]), "correct_b": float(rng.random() < pb),
                                 "emb_dist": max(0.0, d + rng.normal(0, 0.05))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("third", [False, True])
def test_a_planted_flip_on_one_rung_is_found_there_and_not_on_the_others(third):
    rows = ranking_table(_planted(np.random.default_rng(5), third=third))
    assert {(r["rung"], r["measure"]) for r in rows} == {(g, m) for g in RUNGS for m in ("accuracy", "distance")}
    for r in rows:
        xy = next(p for p in r["pairs"] if {p["a"], p["b"]} == {"x/bf16", "y/bf16"})
        if r["rung"] == "typo":
            assert xy["verdict"] == "flips" and xy["p_same"] <= 0.05 and not xy["same_order"], r
            # One of the three orders reversed: tau = (2 - 1) / 3; of two: -1. Its interval excludes 1 either way.
            assert r["tau"] == pytest.approx(1 / 3 if third else -1.0) and r["tau_ci95"][1] < (0.5 if third else 0), r
        else:
            assert xy["verdict"] == "holds" and xy["p_same"] >= 0.95 and xy["same_order"], r
            assert r["tau"] == 1.0 and r["tau_ci95"][0] > 0, r
        if third:  # z stays last: its two orders hold on every rung
            assert len(r["pairs"]) == 3
            assert all(p["verdict"] == "holds" for p in r["pairs"] if "z/bf16" in (p["a"], p["b"])), r
    typo = next(r for r in rows if r["rung"] == "typo" and r["measure"] == "accuracy")
    order = typo["perturbed_order"]
    assert typo["original_order"][0] == "x/bf16" and order.index("y/bf16") < order.index("x/bf16")
    dist = next(r for r in rows if r["rung"] == "typo" and r["measure"] == "distance")
    assert dist["reference"].startswith("mean distance over the other perturbation rungs")
    assert dist["perturbed_order"][0] == "y/bf16"  # lower distance first


def test_no_difference_between_units_is_uncertain_not_a_flip():
    frame = _planted(np.random.default_rng(6), flip_rung="none")
    same = pd.concat([frame[frame["model"] == "x"], frame[frame["model"] == "x"].assign(model="x2")])
    rng = np.random.default_rng(7)
    same.loc[same["model"] == "x2", "emb_dist"] += rng.normal(0, 0.05, int((same["model"] == "x2").sum()))
    dist = [r for r in ranking_table(same) if r["measure"] == "distance"]
    assert all(r["pairs"][0]["verdict"] == "uncertain" for r in dist), [r["pairs"][0]["p_same"] for r in dist]


def test_vectorized_tau_b_is_scipys_kendalltau_with_ties():
    rng = np.random.default_rng(8)
    for _ in range(200):
        u = int(rng.integers(2, 6))
        a, b = rng.integers(0, 3, u).astype(float), rng.integers(0, 3, u).astype(float)
        idx = [(i, j) for i in range(u) for j in range(i + 1, u)]
        s_o = np.array([[np.sign(a[i] - a[j])] for i, j in idx])
        s_p = np.array([[np.sign(b[i] - b[j])] for i, j in idx])
        got = _tau_b(s_o, s_p)[0]
        ref = stats.kendalltau(a, b).statistic if np.ptp(a) and np.ptp(b) else np.nan
        assert (np.isnan(got) and np.isnan(ref)) or got == pytest.approx(ref, abs=1e-12)


def test_one_unit_has_nothing_to_rank_and_too_few_prompts_is_said():
    frame = _planted(np.random.default_rng(9))
    assert ranking_table(frame[frame["model"] == "x"]) == []
    few = frame[frame["prompt_id"].isin(["p000", "p001", "p002"])]
    rows = ranking_stability(few.assign(unit=few["model"]))
    assert rows and all(r["not_computed"].startswith("3 base prompts") for r in rows)
