"""Frozen records of the audit stage: how a model renders a prompt, the rendered prompt, and one pair's audit row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE


@dataclass(frozen=True)
class RenderPolicy:
    """How one model turns a user prompt into ids."""

    use_chat_template: bool
    """True: the prompt goes through the chat template as one user message with the generation prompt; False: the raw prompt, tokenized with the tokenizer's special tokens."""
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keywords for ``apply_chat_template`` (e.g. ``enable_thinking``); empty: none."""
    template_override: str | None = None
    """A template that replaces the tokenizer's own (used by audits of published templates)."""
    template_date: str = DEFAULT_TEMPLATE_DATE
    """What ``strftime_now`` answers inside the template: YYYY-MM-DD, or ``today`` (harness.audit.template_clock)."""
    template_source: str = "tokenizer"
    """Where the template comes from: 'tokenizer', or the .jinja file the registry entry names."""


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    """The string handed to the tokenizer (template applied)."""
    token_ids: tuple[int, ...]
    """The ids the model is given (special tokens included)."""
    reads_clock: bool = False
    """The template asked for the date (the answer was policy.template_date)."""


@dataclass(frozen=True)
class AuditRow:
    model: str
    """Model name."""
    variant: str
    """The variant's template overrides (e.g. -nothink) can change what a model sees."""
    pair_id: str
    """The ladder pair audited."""
    prompt_id: str
    """Base prompt of the pair."""
    rung: str
    """Ladder rung of the pair."""
    edit_kind: str
    """Finer label of the pair's edit."""
    kept: bool
    """True when the pair is decoded and scored (reason == '')."""
    reason: str
    """'' when kept; otherwise identical_input, identical_after_template, exceeds_context or invalid_text (a side
    is not valid Unicode)."""
    n_tokens_a: int
    """Rendered prompt length of side A, in tokens."""
    n_tokens_b: int
    """Rendered prompt length of side B, in tokens."""
    first_diff: int
    """First index where the two id sequences differ (the shorter length when one is a prefix of the other); -1 when they are equal."""
