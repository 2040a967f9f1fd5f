"""The direction sweep of METRICS.md, per position.

Classes (each with both signs where a sign is meaningful):

- ``eig``: top eigenvectors of F_k, ranks 1..n_eig; ``+`` raises the top token
  against the probability-weighted mean row (towards confidence);
- ``structured``: ``w_a - w_b`` for pairs among the top-4 tokens (raw rows,
  the argmax competition direction); ``+`` is higher-ranked minus lower;
- ``random``: Gaussian, normalized;
- ``tangent``: random, projected onto span{w̃_i - μ̃ : i in top-k};
- ``negative``: random, projected onto the orthogonal complement of that span
  (the top-k logits move together, so only the tail can change p).

Random draws come from a seed derived from a stable key (model, position,
class) with sha256: never the global RNG, so a position's directions do not
depend on what else was sampled or in which order.

The number of directions is the same at every position so positions batch;
a direction that does not exist at a position (an eigenvalue at rounding
level, two identical rows, an empty complement) is returned as zeros with
``valid`` False and must be dropped by the caller.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from harness.stability.head import HeadSpec
from harness.stability.records import DirectionMeta, DirectionSpec, FisherTopK, HeadState, LocalStability

CLASSES: tuple[str, ...] = ("eig", "structured", "random", "tangent", "negative")


def stable_seed(*parts: object) -> int:
    """64-bit seed from a key: identical across runs, platforms and Python hash seeds."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def direction_meta(spec: DirectionSpec) -> DirectionMeta:
    cls, label, rank, sign = [], [], [], []

    def add(c: str, lab: str, r: int, s: int) -> None:
        cls.append(c), label.append(lab), rank.append(r), sign.append(s)

    for r in range(1, spec.n_eig + 1):
        for s in (1, -1):
            add("eig", f"eig{r}{'+' if s > 0 else '-'}", r, s)
    top = spec.n_structured_top
    for a in range(top):
        for b in range(a + 1, top):
            for s in (1, -1):
                add("structured", f"w{a + 1}-w{b + 1}" if s > 0 else f"w{b + 1}-w{a + 1}", 0, s)
    for c, n in (("random", spec.n_random), ("tangent", spec.n_tangent), ("negative", spec.n_negative)):
        for i in range(n):
            add(c, f"{c}{i}", 0, 0)
    return DirectionMeta(tuple(cls), tuple(label), tuple(rank), tuple(sign))


def _gaussian(key: Sequence[object], n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    rng = np.random.default_rng(stable_seed(*key))
    return torch.from_numpy(rng.standard_normal((n, d))).to(dtype)


def _unit(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize rows; rows whose norm is a rounding-level fraction of ``ref`` are invalid."""
    n = x.norm(dim=-1, keepdim=True)
    ok = (n > 1e-4 * ref.norm(dim=-1, keepdim=True)).squeeze(-1) & torch.isfinite(n).squeeze(-1)
    return torch.where(ok[..., None], x / n.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x)), ok


def tangent_basis(state: HeadState, head: HeadSpec, stab: LocalStability, fisher: FisherTopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis of span{w̃_i - μ̃ : i in top-k}: (rows [N, r, d], mask [N, r])."""
    W = head.weight
    idx = fisher.idx
    rows = W[idx]
    if state.gprime is not None:
        rows = rows * torch.gather(state.gprime, 1, idx)[..., None]
    ar = torch.arange(state.n, device=W.device)
    g_top = 1.0 if state.gprime is None else state.gprime[ar, stab.top1_id][:, None]
    mu = g_top * W[stab.top1_id] + stab.mu_minus_top  # μ̃ = w̃_top + (μ̃ - w̃_top)
    A = rows - mu[:, None, :]
    _, s, Vh = torch.linalg.svd(A, full_matrices=False)
    tol = s[:, :1] * max(A.shape[1], A.shape[2]) * torch.finfo(A.dtype).eps
    return Vh, s > tol


def build_directions(keys: Sequence[str], head: HeadSpec, state: HeadState, stab: LocalStability,
                     fisher: FisherTopK, spec: DirectionSpec = DirectionSpec()) -> tuple[torch.Tensor, torch.Tensor, DirectionMeta]:
    """Directions [N, M, d] (unit rows, zeros where invalid), validity [N, M], and their metadata.

    ``keys`` (length N) name the positions; random draws are seeded from them.
    ``fisher.eigvecs`` must hold at least ``spec.n_eig`` vectors, oriented
    as the caller wants ``+`` to mean.
    """
    meta = direction_meta(spec)
    N, d, dt = state.n, head.hidden_size, head.dtype
    if len(keys) != N:
        raise ValueError(f"{len(keys)} keys for {N} positions")
    parts: list[torch.Tensor] = []
    oks: list[torch.Tensor] = []
    if spec.n_eig:
        if fisher.eigvecs.shape[1] < spec.n_eig:
            raise ValueError(f"fisher holds {fisher.eigvecs.shape[1]} eigenvectors, {spec.n_eig} requested")
        U = fisher.eigvecs[:, : spec.n_eig]
        ok = torch.isfinite(U).all(-1)
        U = torch.where(ok[..., None], U, torch.zeros_like(U))
        parts.append(torch.stack([U, -U], dim=2).reshape(N, 2 * spec.n_eig, d))
        oks.append(torch.stack([ok, ok], dim=2).reshape(N, 2 * spec.n_eig))
    top = spec.n_structured_top
    if top:
        ids = fisher.idx[:, :top]
        if ids.shape[1] < top:
            raise ValueError(f"need the top {top} tokens, fisher holds {ids.shape[1]}")
        rows = head.weight[ids]  # [N, top, d]
        pair_vecs = []
        for a in range(top):
            for b in range(a + 1, top):
                diff = rows[:, a] - rows[:, b]
                pair_vecs += [diff, -diff]
        P = torch.stack(pair_vecs, dim=1)
        Pu, ok = _unit(P, torch.stack([rows[:, 0]] * P.shape[1], dim=1))
        parts.append(Pu)
        oks.append(ok)
    n_rand = spec.n_random + spec.n_tangent + spec.n_negative
    if n_rand:
        G = torch.stack([
            torch.cat([
                _gaussian((k, "random"), spec.n_random, d, dt),
                _gaussian((k, "tangent"), spec.n_tangent, d, dt),
                _gaussian((k, "negative"), spec.n_negative, d, dt),
            ])
            for k in keys
        ]).to(head.device)
        R, T, Z = G.split([spec.n_random, spec.n_tangent, spec.n_negative], dim=1)
        Ru, rok = _unit(R, R)
        parts.append(Ru)
        oks.append(rok)
        if spec.n_tangent or spec.n_negative:
            B, mask = tangent_basis(state, head, stab, fisher)
            Bm = B * mask[..., None].to(dt)
            proj = lambda X: torch.einsum("nrd,nmr->nmd", Bm, torch.einsum("nrd,nmd->nmr", Bm, X))  # noqa: E731
            Tu, tok = _unit(proj(T), T)
            Zu, zok = _unit(Z - proj(Z), Z)
            parts += [Tu, Zu]
            oks += [tok, zok]
    dirs = torch.cat(parts, dim=1)
    valid = torch.cat(oks, dim=1)
    assert dirs.shape[1] == len(meta)
    return dirs, valid, meta
