"""Fisher top-k: the k×k route of harness.stability versus a dense d×d eigendecomposition.

d = 2,048, k = 64, V = 32,000, fp32, one position. Both routes start from the
same head state (logits and probabilities of ``h``, computed once, untimed):

- k×k route: ``harness.stability.fisher_topk(state, head, k=64)`` as the study
  calls it (top-k, tail mass, G = Lᵀ W̃_k, the k×k Gram matrix, its eigh, the
  top 7 eigenvectors);
- dense route: top-k, C = diag(p_k) − p_k p_kᵀ, F_k = W_kᵀ C W_k (d×d), and
  ``torch.linalg.eigh(F_k)`` (eigenvalues and eigenvectors).

Targets: at least 20× faster, same top eigenvalue to 1e-4 relative.
"""

from __future__ import annotations

from benchmarks.common import Outcome, Row, at_least, fmt_s, median_time

V, D, K = 32_000, 2_048, 64
SPEED_TARGET = 20.0
AGREE_TARGET = 1e-4


def run(quick: bool = False) -> Outcome:
    import torch

    from harness.stability import HeadSpec, fisher_topk
    from harness.stability.closed_form import head_state

    g = torch.Generator().manual_seed(1)
    W = torch.randn(V, D, generator=g)
    W /= D ** 0.5  # rows of norm ~1
    head = HeadSpec(W)
    h = torch.randn(1, D, generator=g) * 4.0  # logits of std ~4: a spread distribution, top-64 mass ~0.85
    state = head_state(h, head)

    def kk_route():
        return fisher_topk(state, head, k=K)

    def dense_route():
        pk, idx = torch.topk(state.p[0], K)
        Wk = W[idx]
        C = torch.diag(pk) - torch.outer(pk, pk)
        F = Wk.T @ (C @ Wk)
        return torch.linalg.eigh(F)

    t_k, times_k, fk = median_time(kk_route, 3 if quick else 9)
    t_d, times_d, dense = median_time(dense_route, 1 if quick else 3, warmup=0)
    lam_k = float(fk.eigvals[0, 0])
    lam_d = float(dense.eigenvalues[-1])
    rel = abs(lam_k - lam_d) / abs(lam_d)
    # fp64 reference of the same F_k, to say which route carries the difference
    pk64, idx = torch.topk(state.p[0].double(), K)
    Wk64 = W[idx].double()
    ev64 = torch.linalg.eigvalsh(Wk64.T @ ((torch.diag(pk64) - torch.outer(pk64, pk64)) @ Wk64))
    lam_ref = float(ev64[-1])
    top_k = fk.eigvals[0, : K - 1].double()
    top_ref = ev64.flip(0)[: K - 1]
    spectrum_err = float(((top_k - top_ref).abs() / lam_ref).max())

    ratio = t_d / t_k
    speed = at_least("fisher/time", f"k×k {fmt_s(t_k)} vs dense d×d eigh {fmt_s(t_d)} (d={D}, k={K})", ratio, SPEED_TARGET)
    agree = Row("fisher/top_eig", f"λ1 {lam_k:.7g} vs {lam_d:.7g}", f"rel. diff <= {AGREE_TARGET:g}", rel,
                f"{rel:.1e}", bool(rel <= AGREE_TARGET))
    agree.info.append(
        f"fisher: fp64 reference λ1 {lam_ref:.9g}; rel. error k×k {abs(lam_k - lam_ref) / lam_ref:.1e}, dense "
        f"{abs(lam_d - lam_ref) / lam_ref:.1e}; all {K - 1} nonzero eigenvalues of the k×k route within "
        f"{spectrum_err:.1e}·λ1 of fp64; top-{K} mass {float(fk.mass[0]):.3f}"
    )
    figures = {
        "V": V, "d": D, "k": K, "kk_s_median": t_k, "kk_s_all": times_k, "dense_s_median": t_d, "dense_s_all": times_d,
        "ratio": ratio, "lambda1_kk": lam_k, "lambda1_dense": lam_d, "lambda1_fp64": lam_ref, "rel_diff": rel,
        "spectrum_max_err_rel_lambda1": spectrum_err, "topk_mass": float(fk.mass[0]),
    }
    return Outcome([speed, agree], figures)
