"""Answer-level statistics against hand computations: accuracy, flip rate, PSS, spread, PDR, Dutta flips."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.summary.answers import NO_PDR_REASON, answer_table, dutta_flips

NAN = float("nan")


def _frame(rows, variant="bf16", rung="synonym", length=64, model="m"):
    return pd.DataFrame([{"model": model, "variant": variant, "rung": rung, "length": length, "prompt_id": p,
                          "pair_id": f"{p}/{rung}/{i}", "correct_a": a, "correct_b": b}
                         for i, (p, a, b) in enumerate(rows)])


ROWS = [("p1", 1, 1), ("p1", 1, 0), ("p2", 1, 0), ("p2", 1, 0), ("p3", 0, 1), ("p3", 0, 0), ("p3", 0, 0),
        ("p4", 1, 1), ("p5", 1, NAN)]  # p5: side b unknown (counted, left out)


def test_answer_table_matches_hand_computation():
    (row,) = answer_table(_frame(ROWS))
    known = [(p, a, b) for p, a, b in ROWS if not math.isnan(b)]
    assert row["n_pairs"] == 8 and row["n_prompts"] == 4 and row["n_pairs_one_side_missing"] == 1
    assert row["accuracy_a"]["mean"] == sum(a for _, a, _ in known) / 8
    assert row["accuracy_b"]["mean"] == sum(b for _, _, b in known) / 8
    assert row["flip_rate"]["mean"] == sum(a != b for _, a, b in known) / 8
    per_prompt = {}
    for p, a, b in known:
        per_prompt.setdefault(p, []).append((a, b))
    pss = np.mean([np.mean([abs(a - b) for a, b in v]) for v in per_prompt.values()])
    spread = np.mean([max([v[0][0]] + [b for _, b in v]) - min([v[0][0]] + [b for _, b in v]) for v in per_prompt.values()])
    assert math.isclose(row["pss"]["mean"], pss) and math.isclose(row["spread"]["mean"], spread)
    assert math.isclose(row["pdr"]["value"], 1 - sum(b for *_, b in known) / sum(a for _, a, _ in known))
    assert row["flips_a_to_b"] == {"right_to_wrong": 3, "wrong_to_right": 1}
    lo, hi = row["flip_rate"]["ci95"]
    # Four prompts: fewer than the interval method covers (harness.summary.stats.MIN_CI_PROMPTS), so no interval.
    assert math.isnan(lo) and math.isnan(hi)


def test_pdr_undefined_when_side_a_never_right_and_one_prompt_has_no_interval():
    (row,) = answer_table(_frame([("p1", 0, 1), ("p2", 0, 0)]))
    assert math.isnan(row["pdr"]["value"]) and row["pdr"]["reason"] == NO_PDR_REASON
    (row,) = answer_table(_frame([("p1", 1, 0), ("p1", 1, 1)]))
    assert row["flip_rate"]["mean"] == 0.5 and all(math.isnan(x) for x in row["flip_rate"]["ci95"])


def test_cells_without_answers_are_left_out_and_one_sided_cells_say_why():
    assert answer_table(_frame([("p1", NAN, NAN)])) == []
    (row,) = answer_table(_frame([("p1", 1, NAN), ("p2", 0, NAN)], rung="positive_control"))
    assert row["n_pairs"] == 0 and row["n_pairs_one_side_missing"] == 2 and "side b" in row["note"]


def test_dutta_flips_count_base_prompts_whose_correctness_changed():
    ref = _frame([("p1", 1, 1), ("p2", 1, 1), ("p3", 0, 0), ("p4", 1, 1)], rung="identical")
    q = _frame([("p1", 1, 1), ("p2", 0, 0), ("p3", 1, 1), ("p4", 1, 1)], rung="identical", variant="int4")
    (row,) = dutta_flips(pd.concat([ref, q]))
    assert (row["variant"], row["reference"], row["n_prompts"]) == ("int4", "bf16", 4)
    assert row["flips"]["mean"] == 0.5 and row["right_to_wrong"] == 1 and row["wrong_to_right"] == 1
    assert row["accuracy"] == row["accuracy_reference"] == 0.75 and row["accuracy_change"] == 0.0  # flips, same accuracy


def test_dutta_flips_over_every_answered_output_count_each_prompt_once():
    def rows(variant, ys):
        # Base prompt p1 (key k1) with two edited prompts (k2, k3); k2 appears in two pairs (counted once).
        (y1, y2, y3) = ys
        return pd.DataFrame([
            {"model": "m", "variant": variant, "rung": "identical", "length": 8, "prompt_id": "p1", "pair_id": "p1/i",
             "prompt_key_a": "k1", "prompt_key_b": "k1", "correct_a": y1, "correct_b": y1},
            {"model": "m", "variant": variant, "rung": "typo", "length": 8, "prompt_id": "p1", "pair_id": "p1/t",
             "prompt_key_a": "k1", "prompt_key_b": "k2", "correct_a": y1, "correct_b": y2},
            {"model": "m", "variant": variant, "rung": "casing", "length": 8, "prompt_id": "p1", "pair_id": "p1/c",
             "prompt_key_a": "k1", "prompt_key_b": "k2", "correct_a": y1, "correct_b": y2},
            {"model": "m", "variant": variant, "rung": "filler", "length": 8, "prompt_id": "p1", "pair_id": "p1/f",
             "prompt_key_a": "k1", "prompt_key_b": "k3", "correct_a": y1, "correct_b": y3},
        ])
    (row,) = dutta_flips(pd.concat([rows("bf16", (1, 1, 0)), rows("int8", (1, 0, 0))]))
    assert row["flips"]["mean"] == 0.0 and row["n_prompts"] == 1  # the base prompt did not flip...
    out = row["outputs"]
    assert out["n_outputs"] == 3 and out["right_to_wrong"] == 1 and out["wrong_to_right"] == 0  # ...an edited one did
    assert out["flips"]["mean"] == pytest.approx(1 / 3)
