"""Shared plumbing of the stretch and floor studies: prompt selection, rendering, JSON safety."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.audit.render import render_prompt
from harness.errors import InputError
from harness.ladder.records import Ladder, PromptPair
from harness.stretch_study.records import RenderedPair
# P leaves out the noise floor and the positive control, as the drift table does.
from harness.score.drift import EXCLUDED_FROM_P  # noqa: F401 - re-exported for the studies


def select_pairs(ladder: Ladder, max_prompts: int | None) -> tuple[PromptPair, ...]:
    """The pairs of the first ``max_prompts`` base prompts in ladder order (all when None)."""
    if max_prompts is not None and max_prompts <= 0:
        raise InputError("--max-prompts", str(max_prompts), "expected a positive integer")
    order: list[str] = []
    for p in ladder.pairs:
        if p.prompt_id not in order:
            order.append(p.prompt_id)
    keep = set(order if max_prompts is None else order[:max_prompts])
    return tuple(p for p in ladder.pairs if p.prompt_id in keep)


def render_pairs(pairs: tuple[PromptPair, ...], loaded) -> list[RenderedPair]:
    cache: dict[str, tuple[int, ...]] = {}

    def ids(text: str) -> tuple[int, ...]:
        if text not in cache:
            cache[text] = render_prompt(loaded.tokenizer, text, loaded.policy).token_ids
        return cache[text]

    return [RenderedPair(p, ids(p.prompt_a), ids(p.prompt_b)) for p in pairs]


def fits(ids: tuple[int, ...], extra: int, context: int | None) -> bool:
    return context is None or len(ids) + extra <= context


def json_safe(o: Any) -> Any:
    """NaN/inf become null (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o
