"""Frozen records of the report stage: a table and a figure, as the Markdown and HTML reports lay them out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """One section of report.md and report.html."""

    key: str
    """Stable anchor: the HTML report places its figures after tables by key."""
    title: str
    """Section heading in both reports."""
    header: list[str]
    """Column names."""
    rows: list[list[str]]
    """Cells as display strings (Markdown inline code and bold allowed), one list per row, header order."""
    note: str = ""
    """Shown under the title (what the numbers are, how they were made)."""
    empty: str = "none"
    """Shown instead of the table when there are no rows: an empty table is said, never hidden."""
    bold_rows: set[int] = field(default_factory=set)
    """Rows a reader must not miss (a failed check)."""


@dataclass(frozen=True)
class Figure:
    """One figure of report.html, drawn or not (with the reason)."""

    key: str
    """Stable anchor; the HTML report places the figure after the table of the same key."""
    title: str
    """Section heading (and the image's alt text)."""
    caption: str
    """Text under the image: what it shows and how it was made; '' when not drawn."""
    png: bytes | None
    """The PNG bytes (no date metadata: same data, same bytes); None when not drawn."""
    missing: str = ""
    """Why the figure is not drawn; empty when it is."""
