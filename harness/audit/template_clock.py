"""The date a chat template sees when it asks for today's date.

Several published templates write the date into every prompt through the
``strftime_now`` function transformers gives them: Llama 3.2 ("Today Date:"),
SmolLM3 (its metadata block), Granite 3.3 (without a system message). The same
prompt is then different tokens on different days, so nightly numbers are not
comparable and the generation cache misses every morning. The harness renders
with a frozen clock instead: the registry's ``template_date`` (default
:data:`DEFAULT_TEMPLATE_DATE`, or ``today`` for the real clock), and it records
whether a template read the clock at all.

How: transformers hands template kwargs through ``_plain_template_data``, which
turns callables into strings (its sandbox does not accept host functions from
callers), so a clock cannot be passed in as a kwarg. Its ``strftime_now`` reads
the module global ``datetime`` of ``transformers.utils.chat_template_utils`` at
call time; that global is swapped for one render, under a lock. This leans on
a private detail, so it is verified: a probe template is rendered through the
same mechanism the first time, and if the frozen date does not come out the
render fails with a message (never a silent real date).
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT_TEMPLATE_DATE = "2026-01-01"
"""Frozen date for templates that read the clock (any fixed date works; this one is the project's)."""

TODAY = "today"
_LOCK = threading.RLock()
_verified: set[str] = set()


class TemplateClockError(RuntimeError):
    """The installed transformers renders templates in a way the frozen clock cannot reach."""


def parse_template_date(value: str) -> _dt.date | None:
    """``YYYY-MM-DD`` → that date; ``today`` → None (the real clock). ValueError otherwise."""
    if value == TODAY:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"must be YYYY-MM-DD or '{TODAY}', got {value!r}")
    return _dt.date.fromisoformat(value)


@dataclass
class ClockReads:
    """How many times templates asked for the time inside one :func:`template_clock` block."""

    count: int = 0


@contextmanager
def template_clock(value: str):
    """Within the block, transformers' ``strftime_now`` answers ``value`` at 00:00:00 (``today``: the real time).

    Yields a :class:`ClockReads` counting the calls either way, so a caller
    can record whether a template read the clock. Blocks nest: the inner clock
    wraps whatever the outer one installed, and each restores what it found.
    """
    from transformers.utils import chat_template_utils as ctu

    day = parse_template_date(value)
    reads = ClockReads()
    with _LOCK:
        found = ctu.datetime

        class _Clock(found):  # type: ignore[misc, valid-type]
            @classmethod
            def now(cls, tz=None):
                reads.count += 1
                return found.now(tz) if day is None else found.combine(day, _dt.time(), tzinfo=tz)

        ctu.datetime = _Clock
        try:
            if day is not None:
                _verify(ctu, value)
                reads.count = 0  # the probe's own read
            yield reads
        finally:
            ctu.datetime = found


def _verify(ctu, value: str) -> None:
    if value in _verified:
        return
    try:
        got = ctu._compile_jinja_template("{{ strftime_now('%Y-%m-%d') }}").render()
    except Exception as exc:  # noqa: BLE001 - any failure means the mechanism is not what this module assumes
        raise TemplateClockError(f"cannot freeze the chat-template clock with this transformers ({exc}); "
                                 f"set template_date: {TODAY} in the registry entry") from exc
    if got != value:
        raise TemplateClockError(f"cannot freeze the chat-template clock with this transformers (probe rendered "
                                 f"{got!r}, expected {value!r}); set template_date: {TODAY} in the registry entry")
    _verified.add(value)
