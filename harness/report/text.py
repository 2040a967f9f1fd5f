"""Text helpers shared by every Markdown and terminal table (report, gate, compare)."""

from __future__ import annotations

import math


def fmt(x: float | None, signed: bool = False, nan: str = "nan") -> str:
    """A metric value with 4 decimals; ``-`` when there is none, ``nan`` (or ``nan=``) when it is NaN."""
    if x is None:
        return "-"
    if math.isnan(x):
        return nan
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def md_cell(text: object) -> str:
    """One Markdown table cell: whitespace collapsed (a newline would end the row), ``\\`` and ``|`` escaped."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")
