"""The floor study's paired contrasts (harness.stretch_study.floor_contrast) on planted per-prompt values."""

import numpy as np
import pandas as pd
import pytest

from harness.stretch_study.floor_contrast import ENGINE_FLOOR, contrasts, floor_verdict, paired
from harness.summary.power import mde, prompt_sd


def _pairs(variant, p_of_prompt, n_prompts=8, per=3):
    return pd.DataFrame([{"model": "m", "variant": variant, "bits": 0, "pair_id": f"p{i}-{j}", "prompt_id": f"p{i}",
                          "rung": "typo", "p_tokens": p_of_prompt(i, j)} for i in range(n_prompts) for j in range(per)])


def _prompts(variant, bits, kl, top1, correct, n_prompts=8):
    return pd.DataFrame([{"model": "m", "variant": variant, "bits": bits, "key": i, "prompt_id": f"p{i}",
                          "kl_ref_tokens": kl(i), "same_top1_ref_tokens": top1(i), "correct": correct(i)}
                         for i in range(n_prompts)])


def test_paired_mean_is_the_mean_of_per_prompt_mean_differences_and_mde_is_powers():
    base = _pairs("bf16", lambda i, j: 0.1 * j)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, size=(8, 3))
    q = _pairs("q", lambda i, j: 0.1 * j + 0.02 * i + noise[i, j])
    c = paired(q, base, "p_tokens", "pair_id")
    per = (0.02 * np.arange(8)[:, None] + noise).mean(axis=1)  # by hand: each prompt's mean difference
    assert c["mean"] == pytest.approx(per.mean(), abs=1e-12) and c["n_prompts"] == 8
    assert c["mde"] == pytest.approx(mde(prompt_sd(per), 8))
    assert c["ci_low"] <= c["mean"] <= c["ci_high"]


def test_a_constant_shift_moves_with_a_zero_mde_and_no_shift_does_not_move():
    base = _pairs("bf16", lambda i, j: 0.3)
    moved = paired(_pairs("q", lambda i, j: 0.35), base, "p_tokens", "pair_id")
    assert moved["mean"] == pytest.approx(0.05) and moved["moves"] and moved["mde"] == 0.0
    same = paired(_pairs("q", lambda i, j: 0.3), base, "p_tokens", "pair_id")
    assert same["mean"] == 0.0 and not same["moves"]


def test_kl_is_read_against_the_engine_floor_and_the_verdict_names_where_p_leads():
    ref = _prompts("bf16", 16, lambda i: 0.0, lambda i: 1.0, lambda i: float(i % 2))
    f16 = _prompts(ENGINE_FLOOR, 16, lambda i: 0.01, lambda i: 0.99, lambda i: float(i % 2))
    # q8: KL exactly the engine floor's (ΔKL 0), P moved by 0.1 on every pair: P leads at 8 bits.
    q8 = _prompts("q8_0@llamacpp", 8, lambda i: 0.01, lambda i: 0.99, lambda i: float(i % 2))
    # q2: both moved.
    q2 = _prompts("q2_k@llamacpp", 2, lambda i: 0.5 + 0.01 * i, lambda i: 0.7, lambda i: 0.0)
    prompts = pd.concat([ref, f16, q8, q2], ignore_index=True)
    pairs = pd.concat([_pairs("bf16", lambda i, j: 0.2), _pairs(ENGINE_FLOOR, lambda i, j: 0.2),
                       _pairs("q8_0@llamacpp", lambda i, j: 0.3), _pairs("q2_k@llamacpp", lambda i, j: 0.6)],
                      ignore_index=True)
    c = contrasts(prompts, pairs, "bf16").set_index("variant")
    assert list(c.index) == [ENGINE_FLOOR, "q8_0@llamacpp", "q2_k@llamacpp"]
    assert c.loc["q8_0@llamacpp", "kl_baseline"] == ENGINE_FLOOR and c.loc[ENGINE_FLOOR, "kl_baseline"] == "bf16"
    assert c.loc["q8_0@llamacpp", "dkl_floor_mean"] == 0.0 and not c.loc["q8_0@llamacpp", "dkl_floor_moves"]
    assert c.loc["q8_0@llamacpp", "dp_ref_mean"] == pytest.approx(0.1) and c.loc["q8_0@llamacpp", "dp_ref_moves"]
    assert c.loc["q2_k@llamacpp", "dkl_floor_mean"] == pytest.approx(0.49 + 0.035)
    assert c.loc["q2_k@llamacpp", "dacc_ref_mean"] == pytest.approx(-0.5)
    assert c.loc["q2_k@llamacpp", "dp_floor_mean"] == pytest.approx(0.4)
    v = floor_verdict(c.reset_index())["m"]
    assert v["kl_first_bits"] == 2 and v["p_first_bits"] == 8 and v["p_moves_before_kl"] == ["q8_0@llamacpp"]
    assert v["acc_first_bits"] == 2
