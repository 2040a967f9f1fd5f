"""The Fisher pullback and the KL boundary of METRICS.md, batched over positions (rows of ``h``).

F_k restricted to the top-k tokens (eigenpairs without forming a d×d matrix), the
quadratic form along directions, the predicted KL radius t* and the empirical
boundary found by bisection; same conventions as harness.stability.closed_form.
"""

from __future__ import annotations

import math

import torch

from harness.core import gemm
from harness.stability.head import HeadSpec
from harness.stability.records import FisherTopK, HeadState


# -- Fisher pullback ------------------------------------------------------


def fisher_topk(state: HeadState, head: HeadSpec, k: int = 64, n_vectors: int = 7,
                orient: torch.Tensor | None = None) -> FisherTopK:
    """Eigenpairs of F_k = W̃_kᵀ C W̃_k, C = diag(p_k) - p_k p_kᵀ, through a k×k matrix.

    C = L Lᵀ with L = P^½ (I - α s sᵀ), s = √p_k,
    α = 1/(1 + √(1 - m)), m = Σ p_k: (I - α ssᵀ)² = I - ssᵀ exactly, so no
    Cholesky (C is singular when m = 1). With G = Lᵀ W̃_k (k×d), F_k = GᵀG and
    its nonzero eigenvalues are those of G Gᵀ (k×k); eigenvectors u ∝ Gᵀ y.

    Unlike the full F, F_k is not invariant to shifting every row by one
    vector: C 1 = (1 - m) p_k, so a common row mean μ₀ adds up to
    m(1 - m)(μ₀·v)² to vᵀF_kv. Negligible when the tail mass 1 - m is small
    (the study records it as ``topk_mass``); t* always uses the full F.

    ``orient`` [N, d]: each eigenvector's sign is chosen so that u·orient ≥ 0
    (the study passes w̃_top - μ̃, so +u raises the top token against the mean).
    """
    W = head.weight
    k = min(int(k), head.vocab_size)
    pk, idx = torch.topk(state.p, k, dim=1)
    # Tail mass from the log-probabilities: 1 - Σ p_k cancels when m ≈ 1.
    tail_logp = state.logp.scatter(1, idx, -math.inf)
    tail = torch.logsumexp(tail_logp, dim=1).exp() if k < head.vocab_size else torch.zeros_like(pk[:, 0])
    alpha = 1.0 / (1.0 + tail.sqrt())
    Wk = W[idx]  # [N, k, d]
    if state.gprime is not None:
        Wk = Wk * torch.gather(state.gprime, 1, idx)[..., None]
    # G = Lᵀ W̃_k = (I - α s sᵀ) P^½ W̃_k: row i is √p_i (w̃_i - α μ̃_k), μ̃_k = Σ_k p_j w̃_j
    s = pk.sqrt()
    mu_k = torch.einsum("nk,nkd->nd", pk, Wk)
    G = s[..., None] * (Wk - alpha[:, None, None] * mu_k[:, None, :])
    M = G @ G.transpose(1, 2)
    evals, evecs = torch.linalg.eigh(M)
    evals = evals.flip(-1).clamp_min(0.0)
    evecs = evecs.flip(-1)
    r = min(int(n_vectors), k)
    U = torch.einsum("nkd,nkr->nrd", G, evecs[:, :, :r])
    nrm = U.norm(dim=-1, keepdim=True)
    # ‖Gᵀy‖ = √λ. Normalize by the computed norm (same vector when λ is
    # accurate); an eigenvalue at rounding level of λ₁ has no meaningful
    # eigenvector, so it gets NaN rather than a random unit vector.
    valid = evals[:, :r] > k * torch.finfo(U.dtype).eps * evals[:, :1]
    U = torch.where(valid[..., None], U / nrm.clamp_min(torch.finfo(U.dtype).tiny), torch.full_like(U, math.nan))
    if orient is not None:
        sign = torch.sign(torch.einsum("nrd,nd->nr", U, orient.to(U.dtype)))
        U = U * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None]
    return FisherTopK(idx, evals, U, pk.sum(1))


def quad_form(state: HeadState, head: HeadSpec, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vᵀ F v for the full Fisher, per direction: the variance under p of (D W v).

    ``dirs`` [N, M, d] (rows of unit vectors per position). Returns
    (quad [N, M], a [N, M, V] = W v, the raw logit change per unit step, which
    the empirical search reuses). Two-pass variance: no cancellation.
    """
    a = gemm.linear(dirs.to(head.dtype), head.weight)
    at = a if state.gprime is None else a * state.gprime[:, None, :]
    p = state.p[:, None, :]
    mean = (p * at).sum(-1, keepdim=True)
    quad = (p * (at - mean) ** 2).sum(-1)
    return quad, a


def t_star(quad: torch.Tensor, eps: float) -> torch.Tensor:
    """Predicted KL boundary sqrt(2ε / vᵀFv); +inf where vᵀFv = 0."""
    return torch.where(quad > 0, (2.0 * eps / quad.clamp_min(torch.finfo(quad.dtype).tiny)).sqrt(),
                       torch.full_like(quad, math.inf))


def rho(t_emp: torch.Tensor, quad: torch.Tensor, eps: float) -> torch.Tensor:
    """ρ = ½ t_emp² vᵀFv / ε (1 when the quadratic is exact); NaN where vᵀFv = 0."""
    out = 0.5 * t_emp * t_emp * quad / eps
    return torch.where(quad > 0, out, torch.full_like(out, math.nan))


def _kl_along(state: HeadState, head: HeadSpec, a: torch.Tensor, t: torch.Tensor,
              centred: torch.Tensor | None) -> torch.Tensor:
    """KL(p(h) ‖ p(h + t v)) for every (position, direction), re-evaluating only the head.

    With Δ = g(z + t a) - g(z) and s = Δ - E_p[Δ], KL = log E_p[e^s] exactly
    (the log-partition difference). Written as log1p(E_p[expm1 s]) it is exact
    at t = 0 and keeps full relative precision at small KL; rows where s is
    large switch to logsumexp(log p + s), which cannot overflow.
    """
    p = state.p[:, None, :]
    if centred is not None:  # linear or scaled head: s = t (ã - E_p ã), precomputed
        s = t[..., None] * centred
    else:
        z = state.z[:, None, :]
        delta = head.apply_post(z + t[..., None] * a) - state.logits[:, None, :]
        s = delta - (p * delta).sum(-1, keepdim=True)
    big = s.amax(-1) > 30.0
    small = torch.log1p((p * torch.expm1(s.clamp(max=30.0))).sum(-1))
    if not bool(big.any()):
        return small
    large = torch.logsumexp(state.logp[:, None, :] + s, dim=-1)
    return torch.where(big, large, small)


def empirical_boundary(state: HeadState, head: HeadSpec, a: torch.Tensor, eps: float,
                       t_guess: torch.Tensor | None = None, rtol: float | None = None,
                       max_expand: int = 80, max_iter: int = 200) -> torch.Tensor:
    """Smallest t ≥ 0 with KL(p(h) ‖ p(h + t v)) ≥ ε, by bracketing and bisection.

    ``a`` [N, M, V] = W v from :func:`quad_form`. For a linear (or scaled)
    head, KL along a ray is convex with zero slope at 0 (its second derivative
    is a variance), hence nondecreasing: the crossing is unique and bisection
    finds it. With softcapping KL is bounded (|z'| ≤ c); a direction whose KL
    never reaches ε within ``max_expand`` doublings gets +inf.
    Bracketing starts from ``t_guess`` (t*), so the bisection runs on a
    factor-2 interval to relative width ``rtol`` (default 8 ulp of the dtype).
    """
    dt = a.dtype
    rtol = float(rtol if rtol is not None else 8 * torch.finfo(dt).eps)
    centred = None
    if head.post != "softcap":
        at = a if state.gprime is None else a * state.gprime[:, None, :]
        centred = at - (state.p[:, None, :] * at).sum(-1, keepdim=True)
    shape = a.shape[:2]
    hi = torch.ones(shape, dtype=dt, device=a.device)
    if t_guess is not None:
        g = t_guess.to(dt)
        hi = torch.where(torch.isfinite(g) & (g > 0), g, hi)
    lo = torch.zeros_like(hi)
    kl = lambda t: _kl_along(state, head, a, t, centred)  # noqa: E731
    # A linear head whose logit change is the same for every token (vᵀFv = 0,
    # e.g. a zero direction) never moves p: no search, +inf at once.
    flat = (centred == 0).all(-1) if centred is not None else torch.zeros_like(hi, dtype=torch.bool)
    # Expand upward until KL(hi) ≥ ε (lo tracks the last t below ε) ...
    below = (kl(hi) < eps) & ~flat
    for _ in range(max_expand):
        if not bool(below.any()):
            break
        lo = torch.where(below, hi, lo)
        hi = torch.where(below, hi * 2.0, hi)
        below = below & (kl(hi) < eps)
    unreachable = below | flat
    # ... and downward while the half of hi is still past ε, so lo/hi ≥ 1/2.
    check = (lo == 0) & ~unreachable
    for _ in range(max_expand):
        if not bool(check.any()):
            break
        half = hi * 0.5
        past = check & (kl(half) >= eps)
        hi = torch.where(past, half, hi)
        lo = torch.where(check & ~past, half, lo)
        check = past
    for _ in range(max_iter):
        open_ = ((hi - lo) > rtol * hi) & ~unreachable
        if not bool(open_.any()):
            break
        mid = 0.5 * (lo + hi)
        past = kl(mid) >= eps
        hi = torch.where(open_ & past, mid, hi)
        lo = torch.where(open_ & ~past, mid, lo)
    out = 0.5 * (lo + hi)
    return torch.where(unreachable, torch.full_like(out, math.inf), out)
