"""Prompt rendering: the exact token ids a model sees for a user prompt.

The chat template is part of the input: it can erase an edit (e.g. a template
that trims the message) before the model ever sees it, so every comparison in
the harness is made on the ids produced here.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

from harness.errors import InputError
from harness.audit.records import RenderedPrompt, RenderPolicy
from harness.audit.template_clock import template_clock


class MissingChatTemplate(Exception):
    """The policy asks for the model's template and the tokenizer has none."""


class TemplateRenderError(Exception):
    """The chat template raised while rendering; the message names the template line and its source."""


def _template_line(exc: BaseException) -> int | None:
    """Line of the template where a render error arose (jinja2 maps its frames to ``<template>`` lines)."""
    line = getattr(exc, "lineno", None)  # TemplateSyntaxError carries it
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


TEMPLATE_SECONDS = 5.0
"""Time one prompt's rendering may take (a published template renders in well under a millisecond); a template
that runs longer (nested loops) fails its model with the reason, and the run goes on. STABPROBE_TEMPLATE_SECONDS
overrides it."""
MAX_RENDERED_CHARS = 1_000_000
"""Characters a rendered prompt may hold beyond 4 per prompt character."""


class TemplateBudgetExceeded(Exception):
    """The chat template ran past its time or size bound."""


def template_seconds() -> float:
    import os

    try:
        return max(0.001, float(os.environ.get("STABPROBE_TEMPLATE_SECONDS", TEMPLATE_SECONDS)))
    except ValueError:
        return TEMPLATE_SECONDS


@contextmanager
def render_budget(seconds: float) -> Iterator[None]:
    """Raise TemplateBudgetExceeded inside the block once it has run ``seconds``.

    Jinja's sandbox bounds what a template may touch, not how long it runs, and a thread cannot be stopped
    from outside. In the main thread a one-shot ITIMER_REAL signal interrupts the template's Python between
    two bytecodes (cost: two setitimer calls per prompt, nothing while it renders); elsewhere (a Ray worker
    thread) a trace function checks the clock on every line of the compiled template (slower, and only there).
    A single C call (``'x' * 10**9``) is not interrupted: the size bound after it applies.
    """
    import signal
    import threading
    import time

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def _expired(signum, frame):  # noqa: ARG001
            raise TemplateBudgetExceeded(f"rendering took over {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    deadline = time.monotonic() + seconds

    def _trace(frame, event, arg):  # noqa: ARG001
        if time.monotonic() > deadline:
            raise TemplateBudgetExceeded(f"rendering took over {seconds:g} s")
        return _trace if frame.f_code.co_filename == "<template>" else None

    old = sys.gettrace()
    sys.settrace(_trace)
    try:
        yield
    finally:
        sys.settrace(old)


def render_prompt(tokenizer, prompt: str, policy: RenderPolicy) -> RenderedPrompt:
    if policy.use_chat_template:
        template = policy.template_override or getattr(tokenizer, "chat_template", None)
        if not template:
            raise MissingChatTemplate(
                "tokenizer has no chat template; set `chat_template: none` in the registry entry "
                "to send the raw prompt (recorded per model)"
            )
        with template_clock(policy.template_date) as reads:
            try:
                with render_budget(template_seconds()):
                    text = tokenizer.apply_chat_template(
                        [{"role": "user", "content": prompt}],
                        chat_template=template,
                        add_generation_prompt=True,
                        tokenize=False,
                        **policy.template_kwargs,
                    )
                if len(text) > MAX_RENDERED_CHARS + 4 * len(prompt):
                    raise TemplateBudgetExceeded(f"rendered {len(text):,} characters for a {len(prompt):,}-character "
                                                 f"prompt (limit {MAX_RENDERED_CHARS:,} plus 4 per prompt character)")
            except Exception as exc:  # noqa: BLE001 - any error raised by the template's own code
                # e.g. a published template that iterates `tools` whenever it is defined, while
                # transformers passes tools=None: a bare TypeError would not say it is the template.
                line = _template_line(exc)
                where = f" at template line {line}" if line is not None else ""
                raise TemplateRenderError(
                    f"chat template failed to render: {type(exc).__name__}: {exc}{where} "
                    f"(template from {policy.template_source})"
                ) from exc
        # Rendered templates carry their own special tokens (BOS included);
        # letting the tokenizer add them again would double a BOS.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return RenderedPrompt(text, tuple(int(i) for i in ids), reads.count > 0)
    text = prompt
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return RenderedPrompt(text, tuple(int(i) for i in ids))


def render_distinct(tokenizer, policy: RenderPolicy, texts: Iterable[str], *,
                    skip_refused: bool = False) -> dict[str, RenderedPrompt]:
    """Every distinct text rendered once (:func:`render_prompt`), in first-seen order: the one loop the audit,
    the teacher-forced drift and the studies render through, so all see the same ids for the same model.

    ``skip_refused``: a text the template refuses is left out instead of raised (the teacher-forced drift, whose
    prompts the cells rendered already: a refused one was never decoded either).
    """
    out: dict[str, RenderedPrompt] = {}
    refused: set[str] = set()
    for text in texts:
        if text in out or text in refused:
            continue
        try:
            out[text] = render_prompt(tokenizer, text, policy)
        except Exception:  # noqa: BLE001 - only with skip_refused; otherwise re-raised as it came
            if not skip_refused:
                raise
            refused.add(text)
    return out


def load_template_file(path: str) -> str:
    from harness.core.yaml_strict import read_text_strict

    text = read_text_strict(path)
    if "{%" not in text and "{{" not in text:
        raise InputError(path, "template", "does not look like a Jinja chat template")
    return text
