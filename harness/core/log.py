"""Logging for the command line: one ``stabprobe`` logger tree, a level from ``-v`` / ``-q``, and
third-party warnings counted and shown once.

Library code logs through ``logging.getLogger(__name__)`` (every module sits under ``harness``),
never ``print``: the command line decides what reaches the terminal, a Python user gets the
standard logging behaviour. Warnings raised by other libraries (transformers, torch, bitsandbytes)
are not printed where they happen, repeatedly, between progress bars: each distinct one is
counted and the count is logged once at the end of the command (``-v`` shows them as they come).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter

ROOT = "harness"
"""The logger every module of the package logs under (``logging.getLogger(__name__)``)."""


class WarningTally:
    """Counts warnings by (category, message, origin package); replaces ``warnings.showwarning`` while installed."""

    def __init__(self, echo: bool) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.echo = echo
        self._previous = None

    def install(self) -> "WarningTally":
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            warnings.showwarning = self._previous
            self._previous = None

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        origin = _package_of(filename)
        key = (category.__name__, str(message).splitlines()[0][:200], origin)
        first = key not in self.counts
        self.counts[key] += 1
        if self.echo and first:
            logging.getLogger(ROOT).debug("warning from %s: %s: %s", origin, category.__name__, message)

    def summary_lines(self) -> list[str]:
        """One line per distinct warning, most frequent first."""
        return [f"{n}× {origin}: {cat}: {msg}" for (cat, msg, origin), n in self.counts.most_common()]


def _package_of(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        i = parts.index("site-packages")
        return parts[i + 1].removesuffix(".py") if i + 1 < len(parts) else "site-packages"
    return "harness" if "harness" in parts else (parts[-1] if parts else "?")


def configure(verbosity: int) -> WarningTally:
    """Logging for one command: ``verbosity`` -1 (``-q``: warnings and errors only), 0 (phases on a terminal;
    warnings and errors when stderr is not one), 1+ (``-v``: phases and debug messages).

    Messages go to stderr (stdout carries the command's result: tables, paths), through rich when a
    terminal is attached, plain ``stabprobe: message`` lines otherwise.
    """
    # Phases are shown by default only on a terminal: piped or in CI, stderr carries at most the one-line
    # error of the command's failure (the contract every error exit keeps) unless -v asks for more.
    shown = verbosity if sys.stderr.isatty() or verbosity != 0 else -1
    level = logging.WARNING if shown < 0 else logging.INFO if shown == 0 else logging.DEBUG
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=verbosity > 0, show_time=verbosity > 0, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("stabprobe: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return WarningTally(echo=verbosity > 0).install()


def report_warnings(tally: WarningTally) -> None:
    """Once, at the end of a command: how many third-party warnings there were, and (``-v``) which."""
    tally.uninstall()
    if not tally.counts:
        return
    log = logging.getLogger(ROOT)
    total = sum(tally.counts.values())
    log.info("%d warning(s) from libraries, %d distinct, each shown once:", total, len(tally.counts))
    for line in tally.summary_lines():
        log.info("  %s", line)
