"""Prompt rendering: the exact token ids a model sees for a user prompt.

The chat template is part of the input: it can erase an edit (e.g. a template
that trims the message) before the model ever sees it, so every comparison in
the harness is made on the ids produced here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import InputError
from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE, template_clock


@dataclass(frozen=True)
class RenderPolicy:
    """How one model turns a user prompt into ids."""

    use_chat_template: bool
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    template_override: str | None = None
    """A template that replaces the tokenizer's own (used by audits of published templates)."""
    template_date: str = DEFAULT_TEMPLATE_DATE
    """What ``strftime_now`` answers inside the template: YYYY-MM-DD, or ``today`` (harness.audit.template_clock)."""


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    """The string handed to the tokenizer (template applied)."""
    token_ids: tuple[int, ...]
    reads_clock: bool = False
    """The template asked for the date (the answer was policy.template_date)."""


class MissingChatTemplate(Exception):
    """The policy asks for the model's template and the tokenizer has none."""


def render_prompt(tokenizer, prompt: str, policy: RenderPolicy) -> RenderedPrompt:
    if policy.use_chat_template:
        template = policy.template_override or getattr(tokenizer, "chat_template", None)
        if not template:
            raise MissingChatTemplate(
                "tokenizer has no chat template; set `chat_template: none` in the registry entry "
                "to send the raw prompt (recorded per model)"
            )
        with template_clock(policy.template_date) as reads:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                chat_template=template,
                add_generation_prompt=True,
                tokenize=False,
                **policy.template_kwargs,
            )
        # Rendered templates carry their own special tokens (BOS included);
        # letting the tokenizer add them again would double a BOS.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return RenderedPrompt(text, tuple(int(i) for i in ids), reads.count > 0)
    text = prompt
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return RenderedPrompt(text, tuple(int(i) for i in ids))


def load_template_file(path: str) -> str:
    from harness.core.yaml_strict import read_text_strict

    text = read_text_strict(path)
    if "{%" not in text and "{{" not in text:
        raise InputError(path, "template", "does not look like a Jinja chat template")
    return text
