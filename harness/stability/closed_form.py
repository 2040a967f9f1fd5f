"""Closed forms of METRICS.md, batched over positions (rows of ``h``).

All functions take a :class:`HeadState` (the head evaluated once at ``h``) and
work in the dtype they are given: fp32 in the study, fp64 in the tests. Cost per
position is a handful of O(Vd) mat-vecs; no V×d Jacobian is ever formed. The
Fisher pullback and the KL boundary are in harness.stability.fisher.

Post-logit maps: with ``z' = g(W h + b)`` every Jacobian/Fisher formula uses the
rows ``w̃_i = g'(z_i) w_i`` (``D W``); the argmax-flip geometry uses the raw rows,
because a strictly increasing ``g`` leaves the argmax of the raw logits in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.core import gemm
from harness.stability.head import HeadSpec
from harness.stability.records import HeadState, LocalStability


def head_state(h: torch.Tensor, head: HeadSpec) -> HeadState:
    if h.ndim == 1:
        h = h[None]
    h = h.to(device=head.device, dtype=head.dtype)
    z = head.linear_logits(h)
    zp = head.apply_post(z)
    # log_softmax first: tail probabilities underflow if exponentiated logits are normalized directly.
    logp = torch.log_softmax(zp, dim=-1)
    return HeadState(h, z, zp, logp, logp.exp(), head.post_derivative(z))


def _scaled(state: HeadState, x: torch.Tensor) -> torch.Tensor:
    """x ⊙ g'(z) (identity map: x)."""
    return x if state.gprime is None else x * state.gprime


def _top2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v, i = torch.topk(x, 2, dim=-1)
    return v, i


@dataclass(frozen=True, eq=False)
class _Centred:
    """Sums over i ≠ top of rows centred on c = w̃_top (see :func:`jacobian_fro_sq`)."""

    c: torch.Tensor
    a2: torch.Tensor
    """‖w̃_i - c‖², [N, V]."""
    Q: torch.Tensor
    T: torch.Tensor
    delta: torch.Tensor
    S2: torch.Tensor


def _centred(state: HeadState, head: HeadSpec, norms: torch.Tensor, top: torch.Tensor,
             w_dot_top: torch.Tensor | None) -> _Centred:
    W = head.weight
    ar = torch.arange(state.n, device=W.device)
    p = state.p
    g = state.gprime
    # pm and pm2 written into the halves of one buffer: one product for both mat-vecs, a single pass over W
    # (V x d) instead of two, without a concatenated copy ([2N, V] floats: 39 MB per 32 rows at V = 151,936).
    buf = torch.empty((2 * state.n, p.shape[1]), dtype=p.dtype, device=p.device)
    pm, pm2 = buf[: state.n], buf[state.n :]
    pm.copy_(p)
    pm[ar, top] = 0.0  # Σ_{i≠top}: the top row is the origin
    gk = torch.ones_like(top, dtype=W.dtype) if g is None else g[ar, top]
    c = gk[:, None] * W[top]
    torch.mul(pm, pm, out=pm2)
    both = gemm.matmul(buf if g is None else torch.cat([_scaled(state, pm), _scaled(state, pm2)], 0), W)
    # Σ p_i = 1, so μ̃ - c = Σ_{i≠top} p_i (w̃_i - c); the weight Σ_{i≠top} p_i is
    # summed directly (1 - p_top would cancel at a confident position).
    delta = both[: state.n] - pm.sum(1, keepdim=True) * c
    T = both[state.n :] - pm2.sum(1, keepdim=True) * c
    S2m = pm2.sum(1)
    if w_dot_top is None:
        # Q = Σ_{i≠top} p_i² ‖w̃_i - c‖² expanded with the product above: the top token
        # is excluded, so every term is O(Σ_{i≠top} p_i² ‖w‖²), the size of Q itself
        # (no catastrophic cancellation), and no W·w_top product is needed.
        g2n = norms[None, :] if g is None else g * g * norms[None, :]
        Q = (pm2 * g2n).sum(1) - 2.0 * (c * both[state.n :]).sum(1) + (c * c).sum(1) * S2m
        return _Centred(c, None, Q.clamp_min(0.0), T, delta, (p * p).sum(1))
    # ‖g_i w_i - g_k w_k‖² = g_i²‖w_i‖² - 2 g_i g_k w_i·w_k + g_k²‖w_k‖²
    if g is None:
        a2 = norms[None, :] - 2.0 * w_dot_top + norms[top][:, None]
    else:
        a2 = g * g * norms[None, :] - 2.0 * g * gk[:, None] * w_dot_top + (gk * gk * norms[top])[:, None]
    a2 = a2.clamp_min(0.0)
    return _Centred(c, a2, (pm2 * a2).sum(1), T, delta, (p * p).sum(1))


def _combine(Q: torch.Tensor, T: torch.Tensor, delta: torch.Tensor, S2: torch.Tensor) -> torch.Tensor:
    return (Q - 2.0 * (delta * T).sum(1) + S2 * (delta * delta).sum(1)).clamp_min(0.0)


def jacobian_fro_sq(state: HeadState, head: HeadSpec, norms: torch.Tensor, top: torch.Tensor,
                    w_dot_top: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """‖J‖_F² = Σ p_i² ‖w̃_i - μ̃‖² via mat-vecs, and μ̃ - w̃_top.

    METRICS.md's identity Σp²‖w‖² - 2μ·Wᵀ(p²) + S₂‖μ‖² is exact but subtracts
    O(‖w‖²) terms to get a result that, at a confident position, is
    O((1 - p_top)²‖Δw‖²): in fp32 that loses every digit. The sum is invariant
    to shifting all rows by one vector, so it is evaluated with rows centred on
    the top token's row c = w̃_top (a_i = w̃_i - c, a_top = 0):

        δ = μ̃ - c = Σ_{i≠top} p_i a_i,  T = Σ_{i≠top} p_i² a_i,  Q = Σ_{i≠top} p_i² ‖a_i‖²
        ‖J‖_F² = Q - 2 δ·T + S₂ ‖δ‖²

    δ and T are the two mat-vecs Wᵀ(·) of the identity (minus a multiple of c);
    Q comes from the row norms and the same product (see _centred); when the
    caller already has W w_top (the flip radius needs it) Q is summed from the
    per-row distances instead. Every term is now of the size of the result.
    """
    parts = _centred(state, head, norms, top, w_dot_top)
    return _combine(parts.Q, parts.T, parts.delta, parts.S2), parts.delta


def jacobian_fro_sq_moved_rows(state: HeadState, head: HeadSpec, norms: torch.Tensor, top: torch.Tensor,
                               moved: torch.Tensor, new_rows: torch.Tensor) -> torch.Tensor:
    """‖J‖_F² after replacing raw rows ``moved`` [N, K] (never the top token) by ``new_rows`` [N, K, d].

    ``p`` and ``D`` stay those of the original head (the TCB paper's geometry
    simulation keeps h and the distribution fixed). Only the K changed rows
    enter: the centred sums Q, T, δ of :func:`jacobian_fro_sq` are corrected
    by their contributions, O(Kd) on top of the usual mat-vecs.
    """
    if bool((moved == top[:, None]).any()):
        raise ValueError("the top token's row is the centre and cannot be moved")
    W = head.weight
    parts = _centred(state, head, norms, top, gemm.linear(W[top], W))
    g = state.gprime
    gj = torch.ones_like(moved, dtype=W.dtype) if g is None else torch.gather(g, 1, moved)
    pj = torch.gather(state.p, 1, moved)
    c = parts.c[:, None, :]
    a_new = gj[..., None] * new_rows.to(W.dtype) - c
    a_old = gj[..., None] * W[moved] - c
    Q = parts.Q + (pj * pj * ((a_new * a_new).sum(-1) - torch.gather(parts.a2, 1, moved))).sum(1)
    T = parts.T + torch.einsum("nk,nkd->nd", pj * pj, a_new - a_old)
    delta = parts.delta + torch.einsum("nk,nkd->nd", pj, a_new - a_old)
    return _combine(Q, T, delta, parts.S2)


def flip_radius(state: HeadState, head: HeadSpec, norms: torch.Tensor, top: torch.Tensor,
                w_dot_top: torch.Tensor, recheck: int = 8,
                dist2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact argmax-flip radius on the raw logits: min_j (z_top - z_j)/‖w_top - w_j‖.

    Distances come from ‖w_k‖² + ‖w_j‖² - 2 w_j·w_k, which cancels for nearly
    equal rows; the ``recheck`` smallest candidates are recomputed from the
    row difference itself before taking the minimum. ``dist2``: those squared
    distances when the caller has them (only used to pick the candidates).
    """
    W = head.weight
    ar = torch.arange(state.n, device=W.device)
    z = state.z
    gap = z[ar, top][:, None] - z
    if dist2 is None:
        dist2 = (norms[top][:, None] + norms[None, :] - 2.0 * w_dot_top).clamp_min(0.0)
    inf = torch.tensor(math.inf, dtype=z.dtype, device=z.device)
    r = torch.where(dist2 > 0, gap / dist2.sqrt(), inf)
    r[ar, top] = inf
    m = min(recheck, r.shape[1] - 1)
    cand = torch.topk(r, m, dim=1, largest=False).indices  # [N, m]
    diff = W[cand] - W[top][:, None, :]  # [N, m, d]
    dist = diff.norm(dim=-1)
    gap_c = torch.gather(gap, 1, cand)
    # identical rows never change order (equal bias: a permanent tie, not an overtaking)
    r_c = torch.where(dist > 0, gap_c / dist.clamp_min(torch.finfo(z.dtype).tiny), inf)
    best = torch.argmin(r_c, dim=1)
    radius = r_c[ar, best]
    rival = cand[ar, best]
    d_best = diff[ar, best]
    direction = d_best / dist[ar, best].clamp_min(torch.finfo(z.dtype).tiny)[:, None]
    return radius, rival, direction


def local_stability(state: HeadState, head: HeadSpec, norms: torch.Tensor) -> LocalStability:
    """TCB, V_eff, margin, flip radius and rival for every row of ``state``."""
    W = head.weight
    _, top_i = _top2(state.z)  # raw argmax = post-map argmax (g strictly increasing)
    top = top_i[:, 0]
    ar = torch.arange(state.n, device=W.device)
    w_dot_top = gemm.linear(W[top], W)  # [N, V]: W w_top, shared by TCB centring and flip radius
    parts = _centred(state, head, norms, top, w_dot_top)  # jacobian_fro_sq, keeping the row distances
    fro2, delta = _combine(parts.Q, parts.T, parts.delta, parts.S2), parts.delta
    # Without a post-map the centred distances are the raw-row distances the flip radius ranks (one [N, V] pass
    # fewer); the radius itself is recomputed from row differences for its candidates.
    radius, rival, direction = flip_radius(state, head, norms, top, w_dot_top,
                                           dist2=parts.a2 if state.gprime is None else None)
    p = state.p
    p1 = p[ar, top]
    p2 = p[ar, top_i[:, 1]]
    entropy = -(p * state.logp).sum(1)
    v_eff = 1.0 / (p * p).sum(1)
    margin = state.logits[ar, top] - state.logits[ar, top_i[:, 1]]
    return LocalStability(top, top_i[:, 1], p1, p1 + p2, entropy, v_eff, margin, fro2.sqrt(),
                          radius, rival, direction, delta)
