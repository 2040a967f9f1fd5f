"""The closed-form probability Jacobian checked against autograd at a real vocabulary, in bounded memory.

``J = ∂p/∂h = (diag p − p pᵀ) D W`` is V×d; at V = 151,936 an explicit fp64
autograd Jacobian (``torch.autograd.functional.jacobian``, whose vectorized
backward materialises a V×V intermediate) needs 185 GB. The checks here keep
their meaning (closed form against brute force, fp64) and never hold more than
``chunk × V`` numbers:

- ‖J‖_F: the brute force is the sum of ‖J e_j‖² over the d basis directions,
  each ``J e_j`` a forward-mode JVP of ``softmax(g(W h + b))`` computed by
  autograd, ``chunk`` basis directions at a time: exact, O(V d²) time, O(chunk V)
  memory;
- J v on a few random unit directions: the closed form ``p ⊙ (ã − p·ã)``,
  ``ã = D W v``, against the JVP;
- rows of J for a vocabulary subset (the top tokens and seeded random ones):
  the closed form ``p_i (w̃_i − μ̃)`` against the VJP of the one-hot ``e_i``.

The brute-force function is written with plain torch ops (``h @ Wᵀ``), not the
harness's product (harness.core.gemm), so the check does not share the code it checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.stability.closed_form import head_state, local_stability
from harness.stability.head import HeadSpec, row_norms_sq


def _probs_fn(head: HeadSpec):
    """h [n, d] -> softmax(g(W h + b)) [n, V] in plain torch (the brute force's function)."""
    W, b = head.weight, head.bias

    def f(h: torch.Tensor) -> torch.Tensor:
        z = h @ W.T
        if b is not None:
            z = z + b
        return torch.softmax(head.apply_post(z), dim=-1)

    return f


def jacobian_fro_autograd(head: HeadSpec, h: torch.Tensor, chunk: int = 32) -> float:
    """‖∂p/∂h‖_F at one state ``h`` [d], exactly, from d autograd JVPs on the basis directions, ``chunk`` at a time."""
    f = _probs_fn(head)
    d = head.hidden_size
    total = torch.zeros((), dtype=head.dtype)
    for lo in range(0, d, chunk):
        c = min(chunk, d - lo)
        E = torch.zeros(c, d, dtype=head.dtype)
        E[torch.arange(c), torch.arange(lo, lo + c)] = 1.0
        _, cols = torch.func.jvp(f, (h[None].expand(c, d).contiguous(),), (E,))  # [c, V]: columns lo..lo+c of J
        total = total + (cols * cols).sum()
    return float(total.sqrt())


def jvp_closed_form(head: HeadSpec, h: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """J v = p ⊙ (ã − E_p ã), ã = D W v, for directions ``dirs`` [m, d] at one state ``h`` [d]: [m, V]."""
    state = head_state(h[None], head)
    a = dirs.to(head.dtype) @ head.weight.T
    if state.gprime is not None:
        a = a * state.gprime
    return state.p * (a - (state.p * a).sum(-1, keepdim=True))


def jacobian_rows_closed_form(head: HeadSpec, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Rows ``p_i (w̃_i − μ̃)`` of J for ``tokens`` [m] at one state ``h`` [d]: [m, d]."""
    state = head_state(h[None], head)
    p = state.p[0]
    g = None if state.gprime is None else state.gprime[0]
    wt = head.weight if g is None else head.weight * g[:, None]  # D W, one V×d copy at most (post-mapped heads only)
    mu = p @ wt
    return p[tokens, None] * (wt[tokens] - mu)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-row ‖a − b‖ / ‖b‖."""
    num = (a - b).norm(dim=-1)
    den = b.norm(dim=-1).clamp_min(torch.finfo(b.dtype).tiny)
    return float((num / den).max())


def check_position(head64: HeadSpec, h64: torch.Tensor, n_dirs: int, n_tokens: int, seed: int,
                   chunk: int = 32) -> dict[str, float]:
    """The three checks at one state (fp64 head and state); relative errors of the closed forms."""
    rng = np.random.default_rng(seed)
    d, V = head64.hidden_size, head64.vocab_size
    f = _probs_fn(head64)
    dirs = torch.from_numpy(rng.standard_normal((n_dirs, d)))
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    _, jv = torch.func.jvp(f, (h64[None].expand(n_dirs, d).contiguous(),), (dirs,))
    jvp_err = _rel(jvp_closed_form(head64, h64, dirs), jv)
    p = f(h64[None])[0]
    n_top = min(n_tokens // 2, V)
    top = torch.topk(p, n_top).indices
    rand = torch.from_numpy(rng.choice(V, size=min(n_tokens - n_top, V), replace=False))
    tokens = torch.unique(torch.cat([top, rand]))
    _, vjp_fn = torch.func.vjp(f, h64[None].expand(tokens.numel(), d).contiguous())
    onehot = torch.zeros(tokens.numel(), V, dtype=head64.dtype)
    onehot[torch.arange(tokens.numel()), tokens] = 1.0
    rows = vjp_fn(onehot)[0]  # [m, d]: row i of J = e_iᵀ J
    # Rows of tail tokens are tiny (p_i ≈ 0): their error is measured against the largest row checked.
    scale = rows.norm(dim=-1).max().clamp_min(torch.finfo(rows.dtype).tiny)
    vjp_err = float(((jacobian_rows_closed_form(head64, h64, tokens) - rows).norm(dim=-1) / scale).max())
    return {"fro_ref": jacobian_fro_autograd(head64, h64, chunk), "jvp_rel_err": jvp_err, "vjp_rel_err": vjp_err,
            "n_tokens": int(tokens.numel())}


def jacobian_check(H: torch.Tensor, idx: np.ndarray, head: HeadSpec, n: int, n_dirs: int = 8, n_tokens: int = 32,
                   seed: int = 0, chunk: int = 32) -> dict[str, Any]:
    """The closed-form ‖J‖_F (fp64 and fp32) and J itself against autograd, on the first ``n`` of positions ``idx``.

    Memory: O(chunk · V) numbers for the brute force plus one fp64 copy of W; time O(V d²) per position.
    """
    if n <= 0 or len(idx) == 0:
        return {"n": 0, "note": "no positions"}
    head64 = head.to(torch.float64)
    head32 = head.to(torch.float32)
    sel = torch.as_tensor(np.asarray(idx[:n]))
    h64 = H[sel].detach().to(torch.float64)
    cf64 = local_stability(head_state(h64, head64), head64, row_norms_sq(head64)).jac_fro
    h32 = H[sel].detach().to(torch.float32)
    cf32 = local_stability(head_state(h32, head32), head32, row_norms_sq(head32)).jac_fro.double()
    errs64, errs32, jvp, vjp = [], [], [], []
    n_tok = 0
    for i in range(h64.shape[0]):
        c = check_position(head64, h64[i], n_dirs, n_tokens, seed + i, chunk)
        ref = c["fro_ref"]
        errs64.append(abs(float(cf64[i]) - ref) / ref)
        errs32.append(abs(float(cf32[i]) - ref) / ref)
        jvp.append(c["jvp_rel_err"])
        vjp.append(c["vjp_rel_err"])
        n_tok = c["n_tokens"]
    return {"n": len(errs64), "max_rel_err_fp64": max(errs64), "max_rel_err_fp32": max(errs32),
            "jvp_max_rel_err": max(jvp), "vjp_max_rel_err": max(vjp), "n_directions": n_dirs, "n_tokens": n_tok,
            "method": f"‖J‖_F from {head.hidden_size} autograd JVPs (basis directions, {chunk} at a time); "
                      f"J v on {n_dirs} random directions (JVP); rows of J for {n_tok} tokens (top and random, VJP); fp64"}
