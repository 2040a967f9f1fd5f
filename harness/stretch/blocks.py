"""The residual stream at the prompt-end position, block by block, as maps one can differentiate.

Definitions (METRICS.md, "Per-layer stretching"). For a decoder with blocks
``1..L`` and final norm ``N``, ``h_0`` is the input of block 1 (the
embeddings, after any scaling the model applies), ``h_l`` the output of block
``l``, and ``h_N = N(h_L)`` the state the unembedding reads. ``T`` is the last
position of the sequence (the prompt end).

The block map of block ``l`` is ``f_l(x) = block_l(H)[T]`` where ``H`` is the
clean input of block ``l`` (captured from one forward pass) with row ``T``
replaced by ``x``: every other position's input to the block is held at its
clean value, so the keys and values of earlier positions are those of the
clean pass, and the attention mask, rotary position embeddings and every
other block argument are the clean pass's own. In a causal decoder positions
``< T`` never depend on row ``T``, so this is not an approximation: the
Jacobian of the whole model's ``h_L[T]`` with respect to ``h_0[T]`` is
exactly the product of the block Jacobians ``J_L ⋯ J_1``, and the composed
map :meth:`BlockStack.chain` is that end-to-end map.

Architectures: blocks and final norm are found under ``model.model.layers`` /
``.norm`` (Llama, Qwen, Mistral, Gemma, OLMo, Granite, ...),
``model.transformer.h`` / ``.ln_f`` (GPT-2, GPT-J) or ``model.gpt_neox.layers``
/ ``.final_layer_norm`` (Pythia); anything else raises :class:`UnsupportedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


class UnsupportedModel(ValueError):
    """The decoder's blocks or final norm could not be located."""


def locate_blocks(model) -> tuple[list[torch.nn.Module], torch.nn.Module]:
    for stack, norm in (("model.layers", "model.norm"), ("transformer.h", "transformer.ln_f"),
                        ("gpt_neox.layers", "gpt_neox.final_layer_norm"), ("model.decoder.layers", "model.decoder.final_layer_norm")):
        layers, final = _get(model, stack), _get(model, norm)
        if isinstance(layers, torch.nn.ModuleList) and isinstance(final, torch.nn.Module):
            return list(layers), final
    raise UnsupportedModel(f"{type(model).__name__}: no decoder block list with a final norm found")


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class BlockStack:
    """One clean forward pass of one sequence, with each block's exact call recorded (holds tensors)."""

    blocks: list[torch.nn.Module]
    norm: torch.nn.Module
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    """Per block: the positional and keyword arguments of the clean call (hidden states included)."""
    states: torch.Tensor
    """[L + 2, seq, d]: h_0 .. h_L and the final-norm output, of the clean pass."""
    logits: torch.Tensor
    """[seq, V] the model's own logits of the clean pass."""

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def block_map(self, l: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """f_l: R^d -> R^d, block ``l`` (1-based) at the last position, all other positions clean."""
        args, kwargs = self.calls[l - 1]
        block = self.blocks[l - 1]
        clean = self.states[l - 1]

        def f(x: torch.Tensor) -> torch.Tensor:
            hidden = torch.cat([clean[:-1], x[None]], dim=0)[None]
            if args:
                out = block(hidden, *args[1:], **kwargs)
            else:
                out = block(**{**kwargs, "hidden_states": hidden})
            return _first(out)[0, -1]

        return f

    def norm_map(self) -> Callable[[torch.Tensor], torch.Tensor]:
        norm = self.norm
        return lambda x: norm(x[None, None])[0, 0]

    def chain(self, first: int = 1, last: int | None = None, with_norm: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """f_last ∘ ... ∘ f_first (optionally followed by the final norm): h_{first-1}[T] -> h_last[T]."""
        last = self.n_blocks if last is None else last
        maps = [self.block_map(l) for l in range(first, last + 1)] + ([self.norm_map()] if with_norm else [])

        def f(x: torch.Tensor) -> torch.Tensor:
            for m in maps:
                x = m(x)
            return x

        return f


def capture(model, input_ids: torch.Tensor) -> BlockStack:
    """Run ``model`` once on one sequence ([1, seq] ids, no cache) and record every block's call and output."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError("capture takes one sequence: input_ids of shape [1, seq]")
    blocks, norm = locate_blocks(model)
    calls: list[tuple[tuple, dict]] = [None] * len(blocks)  # type: ignore[list-item]
    inputs: list[torch.Tensor] = [None] * len(blocks)  # type: ignore[list-item]
    outs: dict[str, torch.Tensor] = {}
    handles = []

    def pre(i):
        def hook(mod, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            calls[i] = (tuple(args), {k: v for k, v in kwargs.items() if k != "hidden_states"})
            inputs[i] = hidden.detach()[0]
        return hook

    for i, b in enumerate(blocks):
        handles.append(b.register_forward_pre_hook(pre(i), with_kwargs=True))
    handles.append(blocks[-1].register_forward_hook(lambda m, a, o: outs.__setitem__("last", _first(o).detach()[0])))
    handles.append(norm.register_forward_hook(lambda m, a, o: outs.__setitem__("norm", _first(o).detach()[0])))
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits[0].detach()
    finally:
        for h in handles:
            h.remove()
    states = torch.stack([*inputs, outs["last"], outs["norm"]])
    return BlockStack(blocks, norm, calls, states, logits)


def layer_states(model, input_ids: torch.Tensor) -> torch.Tensor:
    """[L + 2, seq, d]: h_0 .. h_L and the final-norm state of one sequence (the layer profile's input)."""
    return capture(model, input_ids).states
