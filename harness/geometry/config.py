"""The study's configuration, its validation and the constants of its output files and regimes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import InputError
from harness.ladder.records import Ladder
from harness.models.loading import load_model
from harness.run.records import RunResult
from harness.models.registry import ModelEntry
from harness.stability.records import DirectionSpec


GEOMETRY_PARQUET = "geometry.parquet"
POSITIONS_PARQUET = "geometry_positions.parquet"
PAIRS_PARQUET = "geometry_pairs.parquet"
SUMMARY_JSON = "geometry_summary.json"
REPORT_MD = "geometry.md"
SCHEMA = "stabprobe-geometry/1"

# Two-token regime of the acceptance check: top-2 mass ≥ 0.95, top-1 in [0.5, 0.9].
TWO_TOKEN_MASS = 0.95
TWO_TOKEN_P1 = (0.5, 0.9)
HEADLINE_RANGE = (0.9, 1.15)
CLASS_ORDER = ("eig1", "eig1+", "eig1-", "eig2-7", "eig_pooled", "structured", "random", "tangent", "negative")
"""eig1± : the top eigenvector's two signs apart (+ raises the top token: towards confidence)."""
N_STRATA = 5
N_COMPETITORS = 10  # TCB paper, App. C.4.1
HIGH_VEFF_MIN = 2.0
"""Flat-distribution subset of the correlation table (the paper's broad regime)."""


@dataclass(frozen=True)
class GeometryConfig:
    models: tuple[ModelEntry, ...]
    ladder: Ladder
    out: Path = Path("runs")
    eps: tuple[float, ...] = (0.01, 0.1, 1.0)
    max_new_tokens: int = 32
    max_positions: int | None = None
    """Per model, positions in the direction sweep (deterministic hash order); None = all."""
    k: int = 64
    variant: str = "fp32"
    batch_size: int = 16
    directions: DirectionSpec = field(default_factory=DirectionSpec)
    n_bootstrap: int = 2000
    n_jacobian_checks: int = 5
    low_veff_max: float = 1.5
    """Positions with V_eff at most this form the low-V_eff (high-confidence) subset."""
    argv: tuple[str, ...] = ()
    progress: bool = False
    loader: Callable[[ModelEntry, str], Any] = load_model


# The study ends like a run: where it went, its exit code, its summary, the terminal text.
GeometryResult = RunResult


def validate_geometry_config(cfg: GeometryConfig) -> None:
    if not cfg.eps or any(not (math.isfinite(e) and e > 0) for e in cfg.eps):
        raise InputError("--eps", ",".join(map(str, cfg.eps)), "expected positive finite numbers, e.g. 0.01,0.1,1")
    if cfg.max_new_tokens < 0:
        raise InputError("--max-new-tokens", str(cfg.max_new_tokens), "expected a non-negative integer")
    if cfg.max_positions is not None and cfg.max_positions <= 0:
        raise InputError("--max-positions", str(cfg.max_positions), "expected a positive integer")
    k_min = max(2, cfg.directions.n_structured_top, cfg.directions.n_eig)
    if cfg.k < k_min:
        raise InputError("--k", str(cfg.k), f"expected an integer ≥ {k_min} (the sweep uses the top "
                         f"{cfg.directions.n_eig} eigenvectors of F_k and its {cfg.directions.n_structured_top} top tokens)")
    if not cfg.models:
        raise InputError("--models", "", "no models")
