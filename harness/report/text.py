"""Text helpers shared by every Markdown and terminal table (report, gate, compare)."""

from __future__ import annotations

import math
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
    """One Markdown table cell: whitespace collapsed (a newline would end the row), ``\\`` and ``|`` escaped."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


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
