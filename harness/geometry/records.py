"""Frozen records of the geometry study: one prompt's captured post-norm states.

The study's configuration (GeometryConfig) stays with its validation in harness.geometry.config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptTrace:
    """One prompt greedy-decoded with its post-final-norm state captured at every step."""

    key: str
    """The rendered prompt's key (harness.decode.greedy.prompt_key)."""
    n_prompt_tokens: int
    """Rendered prompt length, in tokens."""
    gen_ids: tuple[int, ...]
    """Greedy tokens generated, EOS excluded (empty when max_new_tokens is 0)."""
    h: torch.Tensor
    """[steps, d] float32: step 0 is the prompt end; the EOS-choosing step is included."""
