"""Text helpers shared by every Markdown and terminal table (report, gate, compare)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np


def fmt(x: float | None, signed: bool = False, nan: str = "nan") -> str:
    """A metric value with 4 decimals; ``-`` when there is none, ``nan`` (or ``nan=``) when it is NaN."""
    if x is None:
        return "-"
    if math.isnan(x):
        return nan
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def mde_text(x: float | None) -> str:
    """A minimum detectable difference: ``∞`` when no test of the run could reach alpha, ``-`` when none was computed."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "∞" if math.isinf(x) else f"{x:.4f}"


def pct(x: float | None) -> str:
    """A share as a whole percentage; ``-`` when there is none or it is NaN."""
    return "-" if x is None or x != x else f"{x:.0%}"


def md_cell(text: object) -> str:
    """One Markdown table cell: whitespace collapsed (a newline would end the row), ``\\`` and ``|`` escaped, raw
    HTML as entities and no inline link (``](`` escaped): what a renderer would run or follow."""
    out = " ".join(strip_control(str(text)).split()).replace("\\", "\\\\").replace("|", "\\|")
    # Raw HTML and inline links are what a renderer would execute or follow; emphasis and brackets (CIs) stay.
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("](", "\\](")


def md_text(text: object) -> str:
    """Text the harness did not write (template errors, registry paths, ladder names), safe inline in Markdown:
    whitespace collapsed, ``&``, ``<`` and ``>`` as entities (CommonMark passes raw HTML through: an injected
    ``<img onerror>`` ran in the probe), ``\\``, backticks, ``*``, ``_``, ``[`` and ``]`` backslash-escaped (no code
    span, emphasis or link can open or close). Rendered, it reads as the text itself."""
    out = " ".join(strip_control(str(text)).split())
    out = out.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([`*_\[\]])", r"\\\1", out)


def md_code(text: object) -> str:
    """``text`` as one Markdown code span: fenced by one more backtick than its longest run (a command line
    with a backtick no longer breaks out of it), on one line, padded so a leading or trailing backtick stays
    inside. Inside a code span a renderer shows everything literally, HTML included."""
    t = " ".join(strip_control(str(text)).split())
    fence = "`" * (max((len(r) for r in re.findall(r"`+", t)), default=0) + 1)
    return f"{fence} {t} {fence}"


_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_control(text: str) -> str:
    """``text`` without terminal control sequences (CSI/OSC escapes, other C0 and C1 controls; newline and tab
    kept): model and template text printed to a terminal can no longer move the cursor, retitle the window or
    hide lines."""
    return _CONTROL.sub("", text)


def fmt_study(x: Any, nd: int = 3) -> str:
    """A study table value (geometry, stretch, floor): ``–`` when missing or non-finite, yes/no for a
    flag, integers as they are, ``nd`` decimals, scientific notation when that would print 0 or overflow."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 10 ** (-nd)):
        return f"{x:.{max(nd - 1, 1)}e}"
    return f"{x:.{nd}f}"
