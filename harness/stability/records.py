"""Frozen records of the closed forms: a head evaluated at h, the per-position results, the Fisher
eigenpairs, the direction sweep's layout and the calibration of t*.

HeadSpec (harness.stability.head) is not one of them: it is the head itself, validated on construction and
carrying the maths every formula applies (logits, the post map and its derivative).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class HeadState:
    """The head evaluated at ``h`` [N, d]: everything later formulas reuse."""

    h: torch.Tensor
    """The states, [N, d], on the head's device and dtype."""
    z: torch.Tensor
    """Raw linear logits W h + b, [N, V]."""
    logits: torch.Tensor
    """Post-map logits g(z), what the model outputs."""
    logp: torch.Tensor
    """log-softmax of ``logits`` [N, V] (taken before exponentiating, so tail probabilities do not underflow)."""
    p: torch.Tensor
    """exp(logp) [N, V]."""
    gprime: torch.Tensor | None
    """g'(z) [N, V]; None for the identity map."""

    @property
    def n(self) -> int:
        return int(self.h.shape[0])


@dataclass(frozen=True, eq=False)
class LocalStability:
    """Per-position closed forms (tensors of length N unless noted)."""

    top1_id: torch.Tensor
    """argmax token of g(z) [N] (int64)."""
    top2_id: torch.Tensor
    """Runner-up token [N] (int64)."""
    top1_prob: torch.Tensor
    """p(1) [N]."""
    top2_mass: torch.Tensor
    """p(1) + p(2)."""
    entropy: torch.Tensor
    """nats."""
    v_eff: torch.Tensor
    """1 / Σ p_i²."""
    margin: torch.Tensor
    """z'(1) - z'(2) on the model's (post-map) logits, as the decoder's trace records it."""
    jac_fro: torch.Tensor
    """‖J‖_F of the probability Jacobian; δ_TCB(ε) = ε / ‖J‖_F."""
    flip_radius: torch.Tensor
    """Smallest L2 change of h that lets some token overtake the top token (exact for the head)."""
    rival_id: torch.Tensor
    """The token that overtakes first (the minimizer)."""
    flip_direction: torch.Tensor
    """[N, d] unit (w_rival - w_top)/‖·‖."""
    mu_minus_top: torch.Tensor
    """[N, d] μ̃ - w̃_top with μ̃ = (D W)ᵀ p: orients eigenvectors, spans the tangent space."""

    def delta_tcb(self, eps: float = 1.0) -> torch.Tensor:
        return eps / self.jac_fro


@dataclass(frozen=True, eq=False)
class FisherTopK:
    """Eigenpairs of the Fisher pullback restricted to the top-k tokens (harness.stability.fisher.fisher_topk)."""

    idx: torch.Tensor
    """[N, k] token ids of the top-k by probability, descending."""
    eigvals: torch.Tensor
    """[N, k] eigenvalues of F_k, descending, clamped at 0."""
    eigvecs: torch.Tensor
    """[N, r, d] unit eigenvectors of the top r eigenvalues (NaN where the eigenvalue is 0)."""
    mass: torch.Tensor
    """[N] top-k probability mass."""

    @property
    def eff_rank(self) -> torch.Tensor:
        """Participation ratio (Σλ)² / Σλ² of F_k's spectrum: 1 for a two-token position."""
        lam = self.eigvals
        return lam.sum(1) ** 2 / (lam * lam).sum(1).clamp_min(torch.finfo(lam.dtype).tiny)


@dataclass(frozen=True)
class HeadCheck:
    """Does g(W h + b) reproduce the model's own logits? (harness.stability.head.check_head)"""

    max_rel_err: float
    """max over rows of max|Δ| / max|logits| (row-wise relative error)."""
    n_rows: int
    """Rows (positions) compared."""
    ok: bool
    """max_rel_err <= the tolerance asked for."""


@dataclass(frozen=True)
class DirectionSpec:
    """How many directions of each class the sweep draws at every position (harness.stability.directions)."""

    n_eig: int = 7
    """Top eigenvectors of F_k swept, each with both signs (0: none)."""
    n_structured_top: int = 4
    """Top tokens whose pairwise row differences w_a - w_b are swept, both signs (0 or >= 2)."""
    n_random: int = 8
    """Gaussian directions, normalized."""
    n_tangent: int = 8
    """Random directions projected onto the top-k tangent span."""
    n_negative: int = 8
    """Random directions projected onto that span's orthogonal complement."""

    def __post_init__(self) -> None:
        for name in ("n_eig", "n_random", "n_tangent", "n_negative"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0")
        if self.n_structured_top < 2 and self.n_structured_top != 0:
            raise ValueError("n_structured_top must be 0 or ≥ 2")


@dataclass(frozen=True)
class DirectionMeta:
    """What each of the M directions is (same at every position)."""

    cls: tuple[str, ...]
    """Class of each direction (harness.stability.directions.CLASSES)."""
    label: tuple[str, ...]
    """Its label (``eig1+``, ``w1-w2``, ``random0``, ...)."""
    rank: tuple[int, ...]
    """Eigen rank (1-based) for ``eig``, 0 otherwise."""
    sign: tuple[int, ...]
    """+1 / -1 for signed classes, 0 for random draws."""

    def __len__(self) -> int:
        return len(self.cls)


@dataclass(frozen=True)
class IsotonicFit:
    """A nondecreasing fit of y on x (harness.stability.calibration.isotonic_fit)."""

    x: np.ndarray
    """Distinct training inputs, increasing."""
    y: np.ndarray
    """Fitted nondecreasing values at ``x``."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Linear between knots, clamped outside the training range (as sklearn's clip).
        return np.interp(np.asarray(x, dtype=np.float64), self.x, self.y)


@dataclass(frozen=True)
class CalibrationScore:
    """How well t* predicts the empirical KL boundary, raw and after grouped cross-validated isotonic calibration."""

    n: int
    """Rows scored: finite positive t* and t_emp."""
    n_positions: int
    """Distinct positions (groups) among them; the isotonic fit needs at least 2."""
    share_raw: float
    """Share of rows with |t*/t_emp - 1| ≤ 0.5, no calibration (nan when n is 0)."""
    share_calibrated: float
    """Same for the held-out isotonic prediction (nan with fewer than 2 positions)."""
    n_excluded: int
    """Rows without a finite positive t* and t_emp (e.g. a boundary never reached)."""

    def to_dict(self) -> dict:
        return asdict(self)
