"""The unembedding head as the closed forms see it: ``z' = g(W h + b)``.

``W`` (V×d) and the optional bias ``b`` come from ``model.get_output_embeddings()``;
the elementwise post-logit map ``g`` comes from the config:

- Gemma-2/3 ``final_logit_softcapping`` c: ``g(z) = c·tanh(z/c)``;
- Granite ``logits_scaling`` s: ``g(z) = z/s``;
- Cohere ``logit_scale`` m: ``g(z) = z·m``, stored as a scale ``s = 1/m``.

Every ``g`` here is strictly increasing, so the argmax of ``g(z)`` is the argmax
of ``z`` and the flip geometry lives on the raw linear logits, while every
Jacobian/Fisher formula uses ``D W`` with ``D = diag(g'(z))``.

``check_head`` is the guard against a head the table above does not know: it
requires ``g(W h + b)`` to reproduce the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from harness.stability.records import HeadCheck

PostMap = Literal["none", "softcap", "scale"]

# Config attributes that multiply or divide logits in some transformers model
# whose meaning we have not encoded: finding one refuses the head instead of
# silently computing the wrong geometry.
_UNHANDLED_MULTIPLIERS = ("lm_head_multiplier", "output_multiplier")


class UnsupportedHead(ValueError):
    """The model's head is not ``g(W h + b)`` with a known elementwise ``g``."""


class HeadMismatch(ValueError):
    """``g(W h + b)`` does not reproduce the model's logits within tolerance."""


@dataclass(frozen=True, eq=False)
class HeadSpec:
    """Frozen description of one unembedding head (tensors are not copied)."""

    weight: torch.Tensor
    """W, shape [V, d]."""
    bias: torch.Tensor | None = None
    """b, shape [V], or None."""
    post: PostMap = "none"
    post_value: float | None = None
    """c for softcap, s for scale (z' = z / s), None for none."""
    source: str = field(default="", compare=False)
    """Where the post map was read from (for the manifest)."""

    def __post_init__(self) -> None:
        if self.weight.ndim != 2:
            raise UnsupportedHead(f"unembedding weight must be 2-D, got shape {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise UnsupportedHead(f"bias shape {tuple(self.bias.shape)} does not match V={self.weight.shape[0]}")
        if self.post == "none":
            if self.post_value is not None:
                raise UnsupportedHead("post map 'none' takes no value")
        elif self.post in ("softcap", "scale"):
            if self.post_value is None or not (self.post_value > 0) or self.post_value == float("inf"):
                raise UnsupportedHead(f"{self.post} needs a positive finite value, got {self.post_value!r}")
        else:
            raise UnsupportedHead(f"unknown post map {self.post!r}")

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "HeadSpec":
        w = self.weight.to(dtype=dtype or self.weight.dtype, device=device or self.weight.device)
        b = None if self.bias is None else self.bias.to(dtype=w.dtype, device=w.device)
        return HeadSpec(w, b, self.post, self.post_value, self.source)

    def describe(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias is not None,
            "post": self.post,
            "post_value": self.post_value,
            "source": self.source,
        }

    # -- the map ---------------------------------------------------------

    def linear_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Raw ``z = W h + b`` for ``h`` of shape [..., d]."""
        from harness.core import gemm

        z = gemm.linear(h, self.weight)
        return z if self.bias is None else z + self.bias

    def apply_post(self, z: torch.Tensor) -> torch.Tensor:
        if self.post == "softcap":
            c = self.post_value
            return c * torch.tanh(z / c)
        if self.post == "scale":
            return z / self.post_value
        return z

    def post_derivative(self, z: torch.Tensor) -> torch.Tensor | None:
        """``g'(z)`` elementwise, or None for the identity (callers skip the multiply)."""
        if self.post == "softcap":
            # sech²(z/c) = 1 - tanh²: exact form, no overflow of cosh for large |z|/c.
            t = torch.tanh(z / self.post_value)
            return 1.0 - t * t
        if self.post == "scale":
            return torch.full_like(z, 1.0 / self.post_value)
        return None

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The model's logits ``g(W h + b)``."""
        return self.apply_post(self.linear_logits(h))


def row_norms_sq(head: HeadSpec) -> torch.Tensor:
    """‖w_i‖² for every row, computed once per model (the TCB identity's only O(Vd) precomputation)."""
    w = head.weight
    return (w * w).sum(dim=1)


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _config_value(config, name: str):
    """An attribute of the config or of its text sub-config (Gemma-3 nests it)."""
    for cfg in (config, _text_config(config)):
        v = getattr(cfg, name, None)
        if v is not None:
            return v
    return None


def post_map_from_config(config) -> tuple[PostMap, float | None, str]:
    model_type = str(getattr(_text_config(config), "model_type", None) or getattr(config, "model_type", ""))
    cap = _config_value(config, "final_logit_softcapping")
    scaling = _config_value(config, "logits_scaling")
    cohere = _config_value(config, "logit_scale")
    found = [n for n, v in (("final_logit_softcapping", cap), ("logits_scaling", scaling), ("logit_scale", cohere)) if v is not None]
    for name in _UNHANDLED_MULTIPLIERS:
        v = _config_value(config, name)
        if v is not None and float(v) != 1.0:
            raise UnsupportedHead(f"config.{name}={v} ({model_type}) multiplies logits in a way this head does not model")
    if len(found) > 1:
        raise UnsupportedHead(f"config sets several logit maps ({', '.join(found)}); only one is supported")
    if cap is not None:
        return "softcap", float(cap), "config.final_logit_softcapping"
    if scaling is not None:
        # Granite divides by logits_scaling; at least one other family multiplies
        # by an attribute of the same name, so only the known family is accepted.
        if not model_type.startswith("granite"):
            raise UnsupportedHead(f"config.logits_scaling on model_type {model_type!r}: direction (× or ÷) unknown")
        return "scale", float(scaling), "config.logits_scaling (z/s, Granite)"
    if cohere is not None:
        if float(cohere) <= 0:
            raise UnsupportedHead(f"config.logit_scale={cohere} must be positive")
        return "scale", 1.0 / float(cohere), "config.logit_scale (z·m, Cohere) as s=1/m"
    return "none", None, "no post-logit map in config"


def head_from_model(model, dtype: torch.dtype | None = torch.float32) -> HeadSpec:
    """The head of a loaded HF causal LM: ``W``, ``b`` from ``get_output_embeddings()``, ``g`` from the config.

    ``dtype`` None keeps the model's dtype; fp32 (default) views fp32 weights
    without copying and upcasts bf16/fp16 ones.
    """
    out = model.get_output_embeddings()
    if out is None or not isinstance(getattr(out, "weight", None), torch.Tensor):
        raise UnsupportedHead(f"{type(model).__name__} has no output embedding with a weight tensor")
    w = out.weight.detach()
    if not torch.is_floating_point(w):
        raise UnsupportedHead(f"output embedding weight is {w.dtype} (quantized heads are not supported)")
    b = getattr(out, "bias", None)
    b = None if b is None else b.detach()
    post, value, source = post_map_from_config(model.config)
    spec = HeadSpec(w, b, post, value, source)
    return spec.to(dtype=dtype) if dtype is not None else spec


def check_head(model, h: torch.Tensor, logits: torch.Tensor, *, rtol: float = 1e-3, strict: bool = True) -> HeadCheck:
    """Verify that ``g(W h + b)`` reproduces ``logits`` (both [N, V] / [N, d]) to ``rtol`` relative, in fp32.

    Relative error is per row (max abs difference over max abs logit), so a
    row of small logits is not hidden by a row of large ones.
    """
    head = head_from_model(model, dtype=torch.float32)
    h = h.detach().to(device=head.device, dtype=torch.float32).reshape(-1, head.hidden_size)
    ref = logits.detach().to(device=head.device, dtype=torch.float32).reshape(-1, head.vocab_size)
    if h.shape[0] != ref.shape[0]:
        raise ValueError(f"{h.shape[0]} states but {ref.shape[0]} logit rows")
    got = head.logits(h)
    err = (got - ref).abs().amax(dim=1) / ref.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    rel = float(err.max()) if err.numel() else 0.0
    result = HeadCheck(rel, int(ref.shape[0]), bool(rel <= rtol))
    if strict and not result.ok:
        raise HeadMismatch(
            f"{type(model).__name__}: g(W h + b) misses the model's logits by {rel:.3g} relative "
            f"(tolerance {rtol:g}; post map {head.post} from {head.source})"
        )
    return result
