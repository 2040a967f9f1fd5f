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
    """Models to study."""
    ladder: Ladder
    """Pairs whose distinct prompts are decoded (every generated step is a position)."""
    out: Path = Path("runs")
    """Directory that receives the run directory."""
    eps: tuple[float, ...] = (0.01, 0.1, 1.0)
    """KL thresholds (nats) of the boundary study, each > 0."""
    max_new_tokens: int = 32
    """Greedy steps per prompt (0: the prompt end only)."""
    max_positions: int | None = None
    """Per model, positions in the direction sweep (deterministic hash order); None = all."""
    k: int = 64
    """Top-k tokens of the truncated Fisher F_k."""
    variant: str = "fp32"
    """Weights the study loads (fp32: closed forms at full precision)."""
    batch_size: int = 16
    """Prompts per decode batch (exact-length batches, no padding)."""
    directions: DirectionSpec = field(default_factory=DirectionSpec)
    """How many directions of each class the sweep draws per position."""
    n_bootstrap: int = 2000
    """Bootstrap resamples of the correlation CIs."""
    n_jacobian_checks: int = 5
    """Positions whose ‖J‖_F closed form is checked against an autograd Jacobian (0: none)."""
    low_veff_max: float = 1.5
    """Positions with V_eff at most this form the low-V_eff (high-confidence) subset."""
    argv: tuple[str, ...] = ()
    """Command line, for the manifest (empty: sys.argv)."""
    progress: bool = False
    """Progress bars on stderr."""
    threads: int | None = None
    """torch CPU threads of the study (None: the project's policy, one on CPU; harness.core.threads)."""
    loader: Callable[[ModelEntry, str], Any] = load_model
    """Loads (entry, variant) -> LoadedModel; tests inject their own."""


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
