"""Frozen records shared by the stretch and floor studies: a rendered pair and how a study ended.

Each study's configuration (StretchConfig, FloorConfig) stays with its validation in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.ladder.records import PromptPair


@dataclass(frozen=True)
class StudyResult:
    """How a study ended: where it wrote, its exit code, its summary, the terminal text."""

    run_dir: Path
    """The run directory written."""
    exit_code: int
    """0, or 3 when a model failed (recorded in the manifest; the others finished)."""
    summary: dict[str, Any]
    """The summary JSON's content."""
    terminal: str
    """Short text for the terminal."""


@dataclass(frozen=True)
class RenderedPair:
    """One ladder pair as a model sees it."""

    pair: PromptPair
    """The ladder pair."""
    ids_a: tuple[int, ...]
    """Token ids of side A after the model's chat template."""
    ids_b: tuple[int, ...]
    """Token ids of side B after the model's chat template."""

    @property
    def erased(self) -> bool:
        """The template/tokenizer made the two sides identical (the audit's ``identical_after_template``)."""
        return self.pair.rung != "identical" and self.ids_a == self.ids_b
