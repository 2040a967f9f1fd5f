"""Shared plumbing of the stretch and floor studies: prompt selection and rendering."""

from __future__ import annotations

from harness.audit.render import render_distinct
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
    rendered = render_distinct(loaded.tokenizer, loaded.policy, (t for p in pairs for t in (p.prompt_a, p.prompt_b)))
    return [RenderedPair(p, rendered[p.prompt_a].token_ids, rendered[p.prompt_b].token_ids) for p in pairs]


def fits(ids: tuple[int, ...], extra: int, context: int | None) -> bool:
    return context is None or len(ids) + extra <= context
