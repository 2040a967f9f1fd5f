"""Frozen records of the run stage: a cell, the settings a cell runs with, and how a run ended.

The run's configuration (RunConfig) stays with its validation and its manifest record in harness.run.config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.ladder.records import PromptPair
from harness.models.registry import ModelEntry
from harness.schema.manifest import DeviceRecord


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    """The run directory written."""
    exit_code: int
    """0, or 3 when a model failed (harness.errors)."""
    summary: dict[str, Any]
    """summary.json's content."""
    terminal: str
    """The table printed at the end."""


@dataclass(frozen=True)
class Cell:
    entry: ModelEntry
    """The model's registry entry (or local directory)."""
    variant: str
    """The variant decoded, spelled with its engine (harness.models.variants.with_engine)."""

    @property
    def name(self) -> str:
        return f"{self.entry.name}--{self.variant}"


@dataclass(frozen=True)
class CellSettings:
    """The part of the run config a cell needs (picklable: it travels to Ray workers)."""

    pairs: tuple[PromptPair, ...]
    """The run's ladder pairs (every cell audits and scores all of them)."""
    lengths: tuple[int, ...]
    """Scored output lengths in tokens (one decode at the longest)."""
    batch_size: int
    """Prompts per decode batch."""
    batching: str
    """bucket or padded (harness.decode.greedy.BATCHING_MODES)."""
    embedder: str | None
    """Sentence embedder name or directory; None: the bundled MiniLM."""
    cache_dir: str | None
    """Memo store directory as a string (harness.core.memo); None: no cache."""
    progress: bool
    """Progress bars on stderr."""
    libraries: dict[str, Any]
    """manifest.json's ``libraries`` (name -> version): part of the cell's cache key."""
    device: DeviceRecord
    """manifest.json's ``device``: part of the cell's cache key."""
    capture: str = "generate"
    """HF engine's readings: 'generate' or 'probe' (harness.decode.engines)."""
    store_full_dist: bool = False
    """Also write every full prompt-end log-softmax row into generations.parquet (``--store-full-dist``)."""
    twin: bool = False
    """Compute the teacher-forced twin divergence of the cell's pairs (``--twin``, harness.run.twin)."""
    workers: int | None = 1
    """Decode workers of one cell (``--workers``; None: as many as the cores, fewer for a small cell: harness.run.worker_memory.workers_for);
    harness.run.workers. The tables do not depend on it."""
    auto_workers: int = 1
    """The default count when ``workers`` is None: the cores this process may use, capped by memory."""
    worker_pool: str = "local"
    """Where the workers run: 'local' (processes on this machine) or 'ray' (actors on the Ray cluster)."""
