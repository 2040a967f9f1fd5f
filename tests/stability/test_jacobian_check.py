"""The bounded-memory Jacobian check (harness.stability.jacobian_check) against a dense autograd Jacobian, and at a
vocabulary where a dense one cannot exist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.stability.head import HeadSpec
from harness.stability.jacobian_check import (check_position, jacobian_check, jacobian_fro_autograd,
                                              jacobian_rows_closed_form, jvp_closed_form)


def _head(V: int, d: int, bias: bool, post: str, value: float | None, seed: int = 0) -> HeadSpec:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, d, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    return HeadSpec(W, b, post, value)


@pytest.mark.parametrize("bias,post,value", [(False, "none", None), (True, "softcap", 3.0), (False, "scale", 2.5)])
def test_pieces_match_the_dense_autograd_jacobian(bias, post, value):
    head = _head(300, 8, bias, post, value)
    h = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f = lambda x: torch.softmax(head.apply_post(x @ head.weight.T + (0 if head.bias is None else head.bias)), -1)  # noqa: E731
    J = torch.autograd.functional.jacobian(f, h)  # [V, d], dense: fine at V = 300
    assert jacobian_fro_autograd(head, h, chunk=3) == pytest.approx(float(torch.linalg.norm(J)), rel=1e-13)
    dirs = torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(jvp_closed_form(head, h, dirs), dirs @ J.T, rtol=0, atol=1e-14 * float(J.abs().max()))
    tokens = torch.tensor([0, 7, 299])
    assert torch.allclose(jacobian_rows_closed_form(head, h, tokens), J[tokens], rtol=0, atol=1e-14 * float(J.abs().max()))
    c = check_position(head, h, n_dirs=4, n_tokens=10, seed=0, chunk=5)
    assert c["jvp_rel_err"] < 1e-12 and c["vjp_rel_err"] < 1e-12


def test_a_wrong_closed_form_is_caught():
    """The check must be able to fail: a Jacobian missing the −p pᵀ term differs from autograd by O(1)."""
    head = _head(200, 6, False, "none", None)
    h = torch.randn(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.3
    p = torch.softmax(head.weight @ h, -1)
    wrong = (p[:, None] * head.weight)  # diag(p) W only
    assert abs(float(torch.linalg.norm(wrong)) / jacobian_fro_autograd(head, h) - 1) > 1e-2


def test_check_at_a_vocabulary_where_a_dense_jacobian_cannot_exist():
    """V = 400,000: the old check's V×V fp64 intermediate would be 1.28 TB; this one holds chunk × V numbers."""
    V, d = 400_000, 4
    head32 = _head(V, d, False, "none", None, seed=5).to(torch.float32)
    H = torch.randn(3, d, generator=torch.Generator().manual_seed(6)) * 2.0
    out = jacobian_check(H, np.arange(3), head32, n=2, n_dirs=3, n_tokens=8)
    assert out["n"] == 2
    assert out["max_rel_err_fp64"] < 1e-10  # closed form vs brute force, both fp64
    assert out["max_rel_err_fp32"] < 1e-3
    assert out["jvp_max_rel_err"] < 1e-10 and out["vjp_max_rel_err"] < 1e-10
