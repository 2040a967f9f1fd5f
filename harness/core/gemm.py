"""fp32 matrix products on the CPU, routed through oneDNN where torch ships it.

Why: torch's x86 BLAS is MKL, and MKL runs its AVX2 kernels on AMD CPUs even
when they have AVX-512; oneDNN JIT-compiles for the instruction set it finds.
On the 2-core AMD EPYC (AVX-512) machines this project is developed on, one
thread: V=32000 x d=1024 logits for 256 states 107 GFLOP/s (MKL) vs 243
(oneDNN); MiniLM's 320x384 @ 384x1536 layer 120 vs 251 GFLOP/s. The closed
forms of harness.stability and the sentence embedder are products of this kind
and nothing else, so both run about twice as fast.

Numerics: still fp32 with fp32 accumulation, only the summation order differs
(max error against fp64 8e-7 relative, MKL 4e-7, on the logits above). Results
are bitwise repeatable for the same shapes and thread count. Neither backend
is row-invariant (row 0 of a 300-row product differs in the last bits from the
same row computed alone), the same as before. The backend in use is recorded
in every manifest (``device.kernels``) and is part of the generation cache key,
so numbers from the two backends are never mixed silently.

oneDNN's op has no autograd formula: whenever autograd would record the
product (grad mode on and an input that requires grad), torch's own matmul is
used. ``STABPROBE_GEMM=torch`` forces torch's route everywhere (to reproduce a
number produced with it, or to compare).
"""

from __future__ import annotations

import os

import torch

_ENV = "STABPROBE_GEMM"


def _onednn_available() -> bool:
    if os.environ.get(_ENV, "").strip().lower() == "torch":
        return False
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
        # The op can be registered on a platform whose build cannot run it: try one small product.
        x, w = torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(4, 3)
        return bool(torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), x @ w.T))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_ONEDNN = _onednn_available()
BACKEND = "onednn" if _ONEDNN else "torch"
"""Which route fp32 CPU products take in this process: ``onednn`` or ``torch``."""


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        _ONEDNN
        and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and weight.ndim == 2
        and x.ndim >= 1
        and x.numel() > 0
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` for x [..., K] and weight [N, K] (a transposed view is fine: no copy is made)."""
    if not _use_onednn(x, weight, bias):
        return torch.nn.functional.linear(x, weight, bias)
    if x.ndim == 1:
        return torch.ops.mkldnn._linear_pointwise(x[None], weight, bias, "none", [], "")[0]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a [..., K] and b [K, N]."""
    if b.ndim != 2:
        return a @ b
    return linear(a, b.T)


class OneDNNLinear(torch.nn.Module):
    """Drop-in for an ``nn.Linear`` at inference: the same parameters, the product through :func:`linear`."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.in_features, self.out_features = base.in_features, base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def route_linears(module: torch.nn.Module) -> int:
    """Swap every ``nn.Linear`` inside ``module`` for :class:`OneDNNLinear`; returns how many were swapped.

    A no-op (0) when oneDNN is not in use, so the module stays exactly torch's.
    """
    if not _ONEDNN:
        return 0
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, OneDNNLinear(child))
                swapped += 1
    return swapped
