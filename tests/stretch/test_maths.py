"""Per-layer stretching maths: power iteration against explicit Jacobians, profiles, growth rates."""

import math

import numpy as np
import pytest
import torch

from harness.stretch.blocks import capture, locate_blocks
from harness.stretch.growth import drift_growth, growth_rate, prompt_mean_ci, rank_correlation
from harness.stretch.power import explicit_top_singular_value, top_singular_value
from harness.stretch.profile import relative_profile, summarize_profiles

IDS = [[1, 40, 41, 42, 43, 44]]


@pytest.fixture(scope="module")
def chat64(tiny_chat_dir):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.float64, attn_implementation="eager").eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def stack(chat64):
    return capture(chat64, torch.tensor(IDS))


def test_block_maps_reproduce_the_clean_pass(chat64, stack):
    """Each block map at the clean input returns the clean output exactly; the head reproduces the logits."""
    L = stack.n_blocks
    assert stack.states.shape == (L + 2, len(IDS[0]), chat64.config.hidden_size)
    for l in range(1, L + 1):
        assert torch.equal(stack.block_map(l)(stack.states[l - 1, -1]), stack.states[l, -1])
    assert torch.equal(stack.norm_map()(stack.states[L, -1]), stack.states[L + 1, -1])
    assert torch.allclose(chat64.lm_head(stack.states[-1]), stack.logits, rtol=0, atol=1e-12)


def test_chain_is_the_whole_model_at_the_last_position(chat64, stack):
    """Holding the other positions at the clean pass is exact in a causal decoder: the composed block
    maps equal a full forward pass whose last input embedding is replaced."""
    emb = chat64.get_input_embeddings()(torch.tensor(IDS))[0]
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = emb[-1] + 0.05 * torch.randn(emb.shape[1], generator=gen, dtype=torch.float64)
        full = chat64.model(inputs_embeds=torch.cat([emb[:-1], x[None]])[None], use_cache=False).last_hidden_state[0, -1]
        assert torch.allclose(stack.chain(with_norm=True)(x), full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("which", ["block_1", "block_2", "block_3", "block_4", "final_norm", "product", "product_norm"])
def test_power_iteration_matches_explicit_jacobian(stack, which):
    L = stack.n_blocks
    maps = {f"block_{l}": (stack.block_map(l), l - 1) for l in range(1, L + 1)}
    maps.update(final_norm=(stack.norm_map(), L), product=(stack.chain(), 0), product_norm=(stack.chain(with_norm=True), 0))
    f, i = maps[which]
    x = stack.states[i, -1]
    exact = explicit_top_singular_value(f, x)
    got = top_singular_value(f, x, tol=1e-10, max_iter=2000)
    assert got.converged and got.jv_mode == "vjp_transpose"
    assert got.sigma == pytest.approx(exact, rel=1e-4)
    # ‖J v‖ never exceeds σ_max (up to the fp32 pieces of RMSNorm, which upcasts only to fp32)
    assert got.sigma <= exact * (1 + 1e-6)


def test_forward_mode_jvp_agrees_and_fp32_is_within_tolerance(chat64, stack):
    f, x = stack.block_map(2), stack.states[1, -1]
    exact = explicit_top_singular_value(f, x)
    fwd = top_singular_value(f, x, tol=1e-10, max_iter=2000, jv_mode="jvp")
    assert fwd.jv_mode == "jvp" and fwd.sigma == pytest.approx(exact, rel=1e-4)
    st32 = capture(chat64.float(), torch.tensor(IDS))
    try:
        f32, x32 = st32.block_map(2), st32.states[1, -1]
        got = top_singular_value(f32, x32, tol=1e-7, max_iter=2000)
        assert got.sigma == pytest.approx(explicit_top_singular_value(f32, x32), rel=1e-4)
    finally:
        chat64.double()


def test_power_iteration_on_a_known_matrix_records_non_convergence():
    A = torch.diag(torch.tensor([3.0, 2.999, 1.0], dtype=torch.float64))
    r = top_singular_value(lambda v: A @ v, torch.ones(3, dtype=torch.float64), tol=1e-14, max_iter=5)
    assert not r.converged and r.iterations == 5 and r.sigma <= 3.0
    r = top_singular_value(lambda v: A @ v, torch.ones(3, dtype=torch.float64), tol=1e-12, max_iter=100000)
    assert r.converged and r.sigma == pytest.approx(3.0, rel=1e-6)
    assert top_singular_value(lambda v: 0 * v, torch.ones(3, dtype=torch.float64)).sigma == 0.0


def test_gpt2_layout_is_found(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # eager attention: the transposed-VJP route needs a double backward, which CPU sdpa (flash) does not have
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).double().eval()
    model.requires_grad_(False)
    blocks, _ = locate_blocks(model)
    st = capture(model, torch.tensor([[1, 2, 3, 4]]))
    assert len(blocks) == 2 and torch.allclose(model.lm_head(st.states[-1]), st.logits, atol=1e-10)
    f, x = st.chain(with_norm=True), st.states[0, -1]
    assert top_singular_value(f, x, tol=1e-10, max_iter=3000).sigma == pytest.approx(explicit_top_singular_value(f, x), rel=1e-4)


def test_relative_profile_and_summary():
    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    b = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    p = relative_profile(a, b)
    assert p[0] == 0.0 and p[1] == 1.0 and math.isnan(p[2])  # ‖a‖ = 0: missing, not 0
    profiles = np.array([[0.0, 0.1, 0.5], [0.0, 0.3, 0.7], [0.0, 0.2, 0.2], [0.0, np.nan, 0.4]])
    s = summarize_profiles(profiles, ["p1", "p1", "p2", "p3"])
    # prompt means: p1 (0, .2, .6), p2 (0, .2, .2), p3 (0, nan, .4)
    assert s.median.tolist() == pytest.approx([0.0, 0.2, 0.4])
    assert s.n_prompts.tolist() == [3, 2, 3] and s.n_pairs == 4
    assert s.growth_layer == 1 and s.growth == pytest.approx(0.2)
    assert s.ci_low[0] == s.ci_high[0] == 0.0 and s.ci_low[2] <= 0.4 <= s.ci_high[2]


def test_growth_rate_closed_forms():
    t = np.arange(10)
    g = growth_rate(0.01 * np.exp(0.3 * t))
    assert g.slope == pytest.approx(0.3, abs=1e-12) and g.endpoint == pytest.approx(0.3, abs=1e-12)
    g = growth_rate([0.0, 0.1, 0.1 * math.e, 0.0])
    assert g.n_zero == 2 and g.n_steps == 2 and g.slope == pytest.approx(1.0) and math.isnan(g.endpoint)
    assert math.isnan(growth_rate([0.5]).slope)


def test_drift_growth_and_rank_correlation():
    assert drift_growth([16, 8, 4, 2], [0.0, 0.1, 0.2, 0.3]) == pytest.approx(0.1)
    assert math.isnan(drift_growth([16], [0.0]))
    r = rank_correlation([1, 2, 3, 4, 5], [2, 4, 5, 9, 10])
    assert r.rho == pytest.approx(1.0) and r.ci_low == pytest.approx(1.0) and r.n == 5
    r = rank_correlation([1, 2, 3], [1, 2, 3])
    assert r.rho == pytest.approx(1.0) and math.isnan(r.ci_low) and "no interval" in r.note
    r = rank_correlation([1, 2], [3, 4])
    assert math.isnan(r.rho) and "undefined" in r.note
    c = prompt_mean_ci([1.0, 3.0, np.nan, 5.0], ["a", "a", "b", "c"])
    assert c["mean"] == pytest.approx(3.5) and c["n_prompts"] == 2 and c["n_missing"] == 1
