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


@dataclass(frozen=True)
class HeadlineRow:
    """One model × variant on the headline rung."""

    model: str
    """Registry name."""
    variant: str
    """Variant label (bf16, int4, bf16@vllm, ...)."""
    mean: float
    """Mean embedding distance over its pairs on the headline rung (0 = the outputs never moved)."""
    ci95: tuple[float, float]
    """95% CI resampling base prompts (NaN when too few prompts)."""
    cluster: str
    """Compact letter among the models of its variant ('-' when not clustered)."""
    mde: float | None
    """Minimum detectable difference of that mean at 80% power (None when not computed; inf: too few prompts)."""
    n_prompts: int
    """Base prompts behind the mean."""
    others: dict[str, str] = field(default_factory=dict)
    """Other perturbed rungs: rung -> 'mean letter' at the same length."""


@dataclass(frozen=True)
class Headline:
    """What report.html's first screen and `stabprobe show` say first."""

    rung: str | None
    """The headline rung (None: nothing perturbed was scored)."""
    length: int | None
    """The length its figures are read at."""
    rows: list[HeadlineRow]
    """One per model × variant, least moving first."""
    sentences: list[str]
    """The findings in words, most important first."""
    determinism: str
    """The determinism verdict in a sentence."""
    traps: list[str]
    """One sentence per flag raised ('' list: none)."""
    other_rungs: list[str]
    """The other perturbed rungs shown beside the headline rung, in ladder order."""


@dataclass(frozen=True)
class LengthsView:
    """Which scored lengths carry information."""

    informative: list[int]
    """Lengths kept in the tables and figures, ascending."""
    collapsed: dict[int, int]
    """Length left out -> the shorter length its rows repeat."""
    longest_output: int | None
    """The longest output of the run in tokens (None: no generations to tell)."""

    def sentence(self) -> str:
        """The one place the report says it ('' when nothing is collapsed)."""
        if not self.collapsed:
            return ""
        gone = ", ".join(str(L) for L in sorted(self.collapsed))
        kept = sorted(set(self.collapsed.values()))
        return (f"Every output ended within {self.longest_output} tokens, before {', '.join(map(str, kept))}: the "
                f"{gone}-token rows would repeat the {', '.join(map(str, kept))}-token ones, so they are shown once, "
                "at the shorter length.")


@dataclass(frozen=True)
class Span:
    """Where two texts differ: ``[start, end_a)`` of a and ``[start, end_b)`` of b (start == len: no difference)."""

    start: int
    """First differing character (the common prefix's length)."""
    end_a: int
    """End of the differing part of a (its common suffix starts here)."""
    end_b: int
    """End of the differing part of b."""
