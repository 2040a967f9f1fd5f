"""Gemma 3's softcapped head on its real 262k vocabulary: the closed forms reproduce the model.

The model comes from tests/fixtures/real_models.py (random init, tiny width,
real vocabulary, built once per session); nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from fixtures.real_models import SOFTCAP
from harness.stability.closed_form import head_state, local_stability
from harness.stability.head import check_head, head_from_model, row_norms_sq


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for the module, whatever ran before it: the fp32 comparisons below hold to 1e-5 at one
    thread (a CPU run's default), but with two the model's GEMM and the closed form's split the sums differently
    and 8 of 1.8M logits of magnitude ~30 differ by 2e-5 (seen when the module ran alone)."""
    from harness.core.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def gemma(real_model_dir, _one_thread):
    """The Gemma 3 model in fp32 with its head scaled so logits reach the softcap (random init gives ~0.5)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(real_model_dir("gemma3")), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(150.0)  # tied with the input embedding; RMSNorm absorbs it there
    ids = torch.tensor([[2, 818, 5279, 529, 7001, 563, 236881]])  # <bos> + a few ordinary Gemma tokens
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
    finally:
        hook.remove()
    return model, ids, seen[-1][0], logits


def _model_jacobian(model, ids, h_last: torch.Tensor) -> torch.Tensor:
    """d softmax(model logits at the last position) / d(head input), [V, d], through the model's own code.

    One forward pass in forward mode: row b of a batch of d copies carries the tangent e_b.
    """
    d = h_last.shape[0]

    def swap(module, args, out):
        hs = out.last_hidden_state.detach()
        primal, tangent = hs.clone(), torch.zeros_like(hs)
        primal[:, -1] = h_last
        tangent[:, -1] = torch.eye(d, dtype=hs.dtype)
        out.last_hidden_state = fwAD.make_dual(primal, tangent)
        return out

    handle = model.model.register_forward_hook(swap)
    try:
        with fwAD.dual_level():
            p = torch.softmax(model(input_ids=ids.expand(d, -1), logits_to_keep=1).logits[:, -1], dim=-1)
            return fwAD.unpack_dual(p).tangent.detach().T
    finally:
        handle.remove()


def test_gemma_softcap_in_the_closed_forms_reproduces_the_model(gemma):
    model, ids, h, logits = gemma
    head = head_from_model(model)
    assert (head.post, head.post_value) == ("softcap", SOFTCAP)
    assert head.vocab_size == logits.shape[-1] > 262_000  # the real vocabulary
    assert check_head(model, h, logits, rtol=1e-5).ok
    raw = head.linear_logits(h)
    assert float(raw.abs().max()) > 2 * SOFTCAP > float(logits.abs().max())  # the cap is doing work here
    assert float(((raw - logits).abs().amax(1) / logits.abs().amax(1)).max()) > 0.1
    state = head_state(h, head)
    torch.testing.assert_close(state.logits, logits, rtol=1e-5, atol=1e-5)
    st = local_stability(state, head, row_norms_sq(head))
    top2 = logits.topk(2, dim=-1)
    assert torch.equal(st.top1_id, top2.indices[:, 0])
    torch.testing.assert_close(st.margin, top2.values[:, 0] - top2.values[:, 1], rtol=1e-4, atol=1e-4)
    # ‖J‖_F of the softmax at the last position against the model's own forward-mode derivative, d columns.
    J = _model_jacobian(model, ids, h[-1])
    assert J.shape == (head.vocab_size, head.hidden_size)
    assert float(torch.linalg.norm(J)) > 1e-3
    np.testing.assert_allclose(float(st.jac_fro[-1]), float(torch.linalg.norm(J)), rtol=1e-3)
