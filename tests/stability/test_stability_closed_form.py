"""Closed forms of harness.stability against brute force, in fp64 on small random heads.

Brute force here means the objects the library never builds: the autograd
Jacobian (V×d), the dense Fisher (d×d) and its eigendecomposition, a bisection
on the argmax itself, and a root-finder on the KL computed from two
log-softmaxes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from harness.stability.closed_form import head_state, local_stability
from harness.stability.fisher import empirical_boundary, fisher_topk, quad_form, rho, t_star
from harness.stability.head import HeadSpec, row_norms_sq
from harness.stability.traces import first_divergence_margin_percentile, step_stability

F64 = torch.float64
RTOL = 1e-5

HEADS = [
    pytest.param(False, "none", None, id="plain"),
    pytest.param(True, "none", None, id="bias"),
    pytest.param(False, "softcap", 2.5, id="softcap"),
    pytest.param(True, "softcap", 2.5, id="bias-softcap"),
    pytest.param(False, "scale", 4.0, id="scale"),
    pytest.param(True, "scale", 0.25, id="bias-scale-up"),
]


def _head(seed: int, V: int, d: int, bias: bool, post: str, value, scale: float = 1.0) -> HeadSpec:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, d, generator=g, dtype=F64) * scale
    b = torch.randn(V, generator=g, dtype=F64) if bias else None
    return HeadSpec(W, b, post, value)


def _h(seed: int, n: int, d: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1000), dtype=F64) * scale


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _probs(head: HeadSpec, h: torch.Tensor) -> torch.Tensor:
    return torch.softmax(head.logits(h), dim=-1)


def _dense_fisher(head: HeadSpec, h: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """F = (DW)ᵀ (diag p − p pᵀ) (DW), optionally restricted to the token ids ``keep`` (F_k)."""
    z = head.linear_logits(h)
    p = torch.softmax(head.apply_post(z), -1)
    g = head.post_derivative(z)
    Wt = head.weight * (g[:, None] if g is not None else 1.0)
    if keep is not None:
        p, Wt = p[keep], Wt[keep]
    C = torch.diag(p) - torch.outer(p, p)
    return Wt.T @ C @ Wt


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_jacobian_frobenius_matches_autograd(bias, post, value):
    head = _head(1, 37, 9, bias, post, value)
    H = _h(1, 6, 9, scale=1.5)
    st = local_stability(head_state(H, head), head, row_norms_sq(head))
    for i in range(H.shape[0]):
        J = torch.autograd.functional.jacobian(lambda x: _probs(head, x), H[i])
        assert J.shape == (37, 9)
        assert _rel(st.jac_fro[i], torch.linalg.norm(J)) < RTOL
        assert _rel(st.delta_tcb(0.5)[i], 0.5 / torch.linalg.norm(J)) < RTOL


def test_centred_identity_keeps_precision_at_a_confident_position():
    """The uncentred identity of METRICS.md cancels to noise in fp32 at p_top ≈ 1; the centred one does not."""
    head64 = _head(2, 64, 16, False, "none", None, scale=1.0)
    h = head64.weight[5] * 6.0  # aligned with row 5: p_top close to 1
    h = h[None]
    ref = torch.linalg.norm(torch.autograd.functional.jacobian(lambda x: _probs(head64, x), h[0]))
    p = _probs(head64, h)[0]
    assert p.max() > 0.999
    head32 = head64.to(torch.float32)
    st32 = local_stability(head_state(h.float(), head32), head32, row_norms_sq(head32))
    assert _rel(st32.jac_fro[0].double(), ref) < 1e-3
    # the plain identity, evaluated in fp32 for contrast (what the centring avoids)
    W, p32 = head32.weight, p.float()
    mu = W.T @ p32
    naive = (p32**2 @ row_norms_sq(head32)) - 2 * mu @ (W.T @ p32**2) + (p32**2).sum() * mu @ mu
    naive_err = abs(math.sqrt(max(float(naive), 0.0)) - float(ref)) / float(ref)
    assert _rel(st32.jac_fro[0].double(), ref) < naive_err
    # and in fp64 the two forms agree
    mu64 = head64.weight.T @ p
    naive64 = (p**2 @ row_norms_sq(head64)) - 2 * mu64 @ (head64.weight.T @ p**2) + (p**2).sum() * mu64 @ mu64
    assert _rel(math.sqrt(float(naive64)), ref) < 1e-6


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_fisher_is_the_kl_hessian_and_eigenpairs_match_dense(bias, post, value):
    V, d = 23, 7
    head = _head(3, V, d, bias, post, value)
    H = _h(3, 4, d, scale=1.2)
    state = head_state(H, head)
    full = fisher_topk(state, head, k=V, n_vectors=3)
    part = fisher_topk(state, head, k=8, n_vectors=3)
    for i in range(H.shape[0]):
        F = _dense_fisher(head, H[i])
        p0 = _probs(head, H[i])
        kl = lambda x: (p0 * (torch.log(p0) - torch.log_softmax(head.logits(H[i] + x), -1))).sum()  # noqa: E731
        hess = torch.autograd.functional.hessian(kl, torch.zeros(d, dtype=F64))
        assert torch.allclose(hess, F, rtol=1e-8, atol=1e-10)
        dense = torch.linalg.eigvalsh(F).flip(0)
        assert _rel(full.eigvals[i, :d], dense) < RTOL
        assert float(full.eigvals[i, d:].abs().max()) < 1e-10 * float(dense[0])  # rank ≤ d
        # top eigenvector of the full F (sign-free comparison)
        u_dense = torch.linalg.eigh(F).eigenvectors[:, -1]
        assert abs(abs(float(full.eigvecs[i, 0] @ u_dense)) - 1.0) < RTOL
        assert _rel(full.eigvecs[i, 0] @ F @ full.eigvecs[i, 0], dense[0]) < RTOL
        # truncated F_k against its own dense eigendecomposition
        Fk = _dense_fisher(head, H[i], keep=part.idx[i])
        dense_k = torch.linalg.eigvalsh(Fk).flip(0).clamp_min(0)
        big = dense_k > 1e-6 * dense_k[0]
        assert _rel(part.eigvals[i, :d][big], dense_k[big]) < RTOL
        assert float(torch.cat([(part.eigvals[i, :d][~big] - dense_k[~big]).abs(), torch.zeros(1, dtype=F64)]).max()) < 1e-10 * float(dense_k[0])
        for r in range(3):
            u = part.eigvecs[i, r]
            assert _rel(u @ Fk @ u, dense_k[r]) < RTOL
            assert float(torch.linalg.norm(Fk @ u - dense_k[r] * u)) < 1e-8 * float(dense_k[0])


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_quad_form_and_t_star(bias, post, value):
    V, d = 19, 6
    head = _head(4, V, d, bias, post, value)
    H = _h(4, 3, d)
    dirs = torch.randn(3, 5, d, generator=torch.Generator().manual_seed(9), dtype=F64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    quad, a = quad_form(head_state(H, head), head, dirs)
    assert torch.allclose(a, dirs @ head.weight.T)
    for i in range(3):
        F = _dense_fisher(head, H[i])
        for m in range(5):
            v = dirs[i, m]
            assert _rel(quad[i, m], v @ F @ v) < RTOL
    ts = t_star(quad, 0.1)
    assert torch.allclose(0.5 * ts**2 * quad, torch.full_like(quad, 0.1))


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_flip_radius_matches_a_bisection_on_the_argmax(bias, post, value):
    V, d = 29, 8
    head = _head(5, V, d, bias, post, value)
    H = _h(5, 8, d, scale=0.8)
    st = local_stability(head_state(H, head), head, row_norms_sq(head))
    am = lambda x: int(torch.argmax(head.logits(x)))  # noqa: E731
    gen = torch.Generator().manual_seed(11)
    for i in range(H.shape[0]):
        k, r, u = int(st.top1_id[i]), float(st.flip_radius[i]), st.flip_direction[i]
        assert am(H[i]) == k
        assert abs(float(u.norm()) - 1.0) < 1e-12
        assert torch.allclose(u, (head.weight[st.rival_id[i]] - head.weight[k]) / (head.weight[st.rival_id[i]] - head.weight[k]).norm())
        lo, hi = 0.0, 2.0 * r
        assert am(H[i] + hi * u) != k
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if am(H[i] + mid * u) != k else (mid, hi)
        assert _rel(hi, r) < RTOL
        assert am(H[i] + r * (1 + 1e-9) * u) == int(st.rival_id[i])
        # nothing flips closer along other directions: the radius is a ball
        for _ in range(20):
            v = torch.randn(d, generator=gen, dtype=F64)
            v = v / v.norm()
            assert am(H[i] + 0.999 * r * v) == k


def _kl_direct(head: HeadSpec, h: torch.Tensor, v: torch.Tensor, t: float) -> float:
    lp0 = torch.log_softmax(head.logits(h), -1)
    lpt = torch.log_softmax(head.logits(h + t * v), -1)
    return float((lp0.exp() * (lp0 - lpt)).sum())


@pytest.mark.parametrize("bias,post,value", HEADS)
@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0])
def test_empirical_boundary_matches_a_root_finder(bias, post, value, eps):
    V, d = 17, 6
    head = _head(6, V, d, bias, post, value)
    H = _h(6, 3, d)
    state = head_state(H, head)
    dirs = torch.randn(3, 4, d, generator=torch.Generator().manual_seed(12), dtype=F64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    quad, a = quad_form(state, head, dirs)
    ts = t_star(quad, eps)
    te = empirical_boundary(state, head, a, eps, ts)
    for i in range(3):
        for m in range(4):
            f = lambda t: _kl_direct(head, H[i], dirs[i, m], t) - eps  # noqa: E731
            t_hi = float(te[i, m])
            if not math.isfinite(t_hi):
                # only a softcapped head can cap KL below ε
                assert post == "softcap" and f(1e6) < 0
                continue
            grid = np.linspace(0, t_hi, 400)[:-1]
            assert all(f(t) < 0 for t in grid)  # nothing crosses earlier
            root = brentq(f, 0.5 * t_hi, 1.5 * t_hi, xtol=1e-15, rtol=1e-14)
            assert _rel(t_hi, root) < RTOL
    r = rho(te, quad, eps)
    assert torch.isfinite(r[torch.isfinite(te)]).all()


def test_two_token_limit():
    """Two tokens hold the mass: F ≈ p_a p_b (w_a − w_b)(w_a − w_b)ᵀ, top eigenvector ∝ w_a − w_b."""
    V, d = 9, 5
    head = _head(7, V, d, False, "none", None)
    W = head.weight
    # logits log 0.8, log 0.2 and 40 below for everything else, set through the bias at h = 0
    a, b = 2, 6
    target = torch.full((V,), -40.0, dtype=F64)
    target[a], target[b] = math.log(0.8), math.log(0.2)
    head = HeadSpec(W, target, "none", None)
    h = torch.zeros(1, d, dtype=F64)
    state = head_state(h, head)
    fk = fisher_topk(state, head, k=4, n_vectors=1)
    diff = W[a] - W[b]
    lam = 0.8 * 0.2 * float(diff @ diff)
    assert _rel(fk.eigvals[0, 0], lam) < RTOL
    assert float(fk.eigvals[0, 1]) < 1e-12 * lam
    assert abs(abs(float(fk.eigvecs[0, 0] @ diff / diff.norm())) - 1.0) < RTOL
    assert _rel(fk.eff_rank[0], 1.0) < RTOL
    F = _dense_fisher(head, h[0])
    assert torch.allclose(F, 0.8 * 0.2 * torch.outer(diff, diff), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("q,expected", [(0.5, (1.00, 1.00)), (0.9, (0.89, 1.14)), (0.99, (0.66, 1.69)), (0.999, (0.34, 6.0))])
def test_rho_reference_values_for_a_two_token_distribution(q, expected):
    """METRICS.md: at ε = 0.01 along ±v, ρ is 1.00/1.00 (q=.5), 0.89/1.14 (.9), 0.66/1.69 (.99), 0.34/6.0 (.999)."""
    d = 4
    W = torch.randn(2, d, generator=torch.Generator().manual_seed(8), dtype=F64)
    head = HeadSpec(W, torch.tensor([math.log(q), math.log(1 - q)], dtype=F64))
    h = torch.zeros(1, d, dtype=F64)
    state = head_state(h, head)
    st = local_stability(state, head, row_norms_sq(head))
    fk = fisher_topk(state, head, k=2, n_vectors=1, orient=-st.mu_minus_top)
    u = fk.eigvecs[0, 0]
    dirs = torch.stack([u, -u])[None]
    quad, a = quad_form(state, head, dirs)
    te = empirical_boundary(state, head, a, 0.01, t_star(quad, 0.01))
    r = rho(te, quad, 0.01)[0]
    plus, minus = float(r[0]), float(r[1])  # +u raises the top token: KL saturates, ρ ≥ 1
    tol = 0.05 if q == 0.999 else 0.005
    assert minus == pytest.approx(expected[0], abs=tol)
    assert plus == pytest.approx(expected[1], abs=tol)


def test_fp32_defaults_agree_with_fp64():
    head64 = _head(10, 50, 12, True, "softcap", 3.0)
    H = _h(10, 5, 12)
    st64 = local_stability(head_state(H, head64), head64, row_norms_sq(head64))
    head32 = head64.to(torch.float32)
    st32 = local_stability(head_state(H.float(), head32), head32, row_norms_sq(head32))
    assert _rel(st32.jac_fro.double(), st64.jac_fro) < 1e-4
    assert _rel(st32.flip_radius.double(), st64.flip_radius) < 1e-4
    assert torch.equal(st32.rival_id, st64.rival_id)


def test_step_stability_returns_per_row_arrays():
    head = _head(11, 40, 8, False, "none", None).to(torch.float32)
    H = _h(11, 5, 8).float()
    out = step_stability(H, head, row_norms_sq(head))
    st = local_stability(head_state(H, head), head, row_norms_sq(head))
    assert set(out) >= {"margin", "delta_tcb", "flip_radius", "rival_id"}
    for v in out.values():
        assert isinstance(v, np.ndarray) and v.shape == (5,)
    assert out["rival_id"].dtype == np.int64 and out["margin"].dtype == np.float32
    np.testing.assert_allclose(out["delta_tcb"], (1.0 / st.jac_fro).numpy(), rtol=1e-6)
    logits = head.logits(H)
    top2 = torch.topk(logits, 2).values
    np.testing.assert_allclose(out["margin"], (top2[:, 0] - top2[:, 1]).numpy(), rtol=1e-6)
    with pytest.raises(ValueError):
        step_stability(H[:, :4], head, row_norms_sq(head))


def test_first_divergence_margin_percentile():
    trace = [5.0, 0.5, 3.0, 4.0, 2.0]
    assert first_divergence_margin_percentile(trace, 2) == pytest.approx(10.0)  # lowest of five: (0 + ½)/5
    assert first_divergence_margin_percentile(trace, 1) == pytest.approx(90.0)
    assert math.isnan(first_divergence_margin_percentile(trace, 0))  # no divergence
    assert math.isnan(first_divergence_margin_percentile(trace, 6))
    assert first_divergence_margin_percentile(np.ones(4), 3) == pytest.approx(50.0)


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_moved_rows_tcb_matches_a_rebuilt_head(bias, post, value):
    """The TCB paper's cluster/disperse simulation: rows moved, p and D held fixed."""
    from harness.stability.closed_form import jacobian_fro_sq_moved_rows

    V, d = 31, 8
    head = _head(12, V, d, bias, post, value)
    H = _h(12, 4, d)
    state = head_state(H, head)
    st = local_stability(state, head, row_norms_sq(head))
    top = st.top1_id
    order = torch.argsort(state.p, dim=1, descending=True)
    moved = order[:, 1:11]
    for alpha in (0.5, -0.5):  # towards (cluster) and away from (disperse) the top row
        new = head.weight[moved] + alpha * (head.weight[top][:, None, :] - head.weight[moved])
        got = jacobian_fro_sq_moved_rows(state, head, row_norms_sq(head), top, moved, new)
        for i in range(4):
            W2 = head.weight.clone()
            W2[moved[i]] = new[i]
            p = state.p[i]
            g = state.gprime[i] if state.gprime is not None else torch.ones(V, dtype=F64)
            Wt = W2 * g[:, None]
            J = (torch.diag(p) - torch.outer(p, p)) @ Wt
            assert _rel(got[i], (J**2).sum()) < RTOL
    assert _rel(jacobian_fro_sq_moved_rows(state, head, row_norms_sq(head), top, moved, head.weight[moved]).sqrt(),
                st.jac_fro) < RTOL


def test_a_direction_that_moves_no_logit_differences_never_reaches_the_boundary():
    head = _head(13, 11, 5, True, "none", None)
    H = _h(13, 2, 5)
    state = head_state(H, head)
    dirs = torch.zeros(2, 2, 5, dtype=F64)
    dirs[:, 1, 0] = 1.0
    quad, a = quad_form(state, head, dirs)
    te = empirical_boundary(state, head, a, 0.1, t_star(quad, 0.1))
    assert torch.isinf(te[:, 0]).all() and torch.isfinite(te[:, 1]).all()
    assert torch.isnan(rho(te, quad, 0.1)[:, 0]).all()


@pytest.mark.parametrize("bias,post,value", HEADS)
def test_tcb_without_the_top_row_product_matches_the_dense_jacobian(bias, post, value):
    """jacobian_fro_sq with no W·w_top (the expanded centred sum) against ‖(diag p − ppᵀ) D W‖_F."""
    from harness.stability.closed_form import head_state, jacobian_fro_sq

    head = _head(11, 60, 12, bias, post, value)
    H = _h(11, 5, 12, scale=2.0)
    state = head_state(H, head)
    top = torch.argmax(state.p, dim=-1)
    norms = (head.weight * head.weight).sum(1)
    fast, _ = jacobian_fro_sq(state, head, norms, top)
    with_rows, _ = jacobian_fro_sq(state, head, norms, top, head.weight[top] @ head.weight.T)
    for i, h in enumerate(H):
        z = head.linear_logits(h[None])[0]
        p = torch.softmax(head.apply_post(z), -1)
        g = head.post_derivative(z[None])
        Wt = head.weight * (g[0][:, None] if g is not None else 1.0)
        dense = torch.linalg.matrix_norm((torch.diag(p) - torch.outer(p, p)) @ Wt) ** 2
        assert _rel(fast[i], dense) < RTOL and _rel(with_rows[i], dense) < RTOL


def test_tcb_expansion_keeps_fp32_digits_at_a_confident_position():
    from harness.stability.closed_form import head_state, jacobian_fro_sq

    head64 = _head(12, 400, 32, False, "none", None, scale=3.0)
    h = head64.weight[7:8] * 0.15  # aligned with row 7: top-1 probability close to 1
    s64 = head_state(h, head64)
    top = torch.argmax(s64.p, dim=-1)
    ref, _ = jacobian_fro_sq(s64, head64, (head64.weight ** 2).sum(1), top)
    head32 = HeadSpec(head64.weight.float(), None, "none", None)
    s32 = head_state(h.float(), head32)
    got, _ = jacobian_fro_sq(s32, head32, (head32.weight ** 2).sum(1), top)
    assert float(s64.p[0, top]) > 0.999
    assert _rel(got.double(), ref) < 1e-3
