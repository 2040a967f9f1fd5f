"""Frozen records of the gate: one check, the gate's outcome, and one model x variant of its run.

The gate's configuration (GateConfig, GateNeighbourhood) stays with its loading and validation in harness.gate.config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PASS, FAIL = "pass", "fail"
"""The two verdicts of a check."""


@dataclass(frozen=True)
class GateCheck:
    """One neighbourhood x model x variant x threshold."""

    neighbourhood: str
    """Id of the neighbourhood (gate.yaml ``neighbourhoods[].id``)."""
    model: str
    """Model name."""
    variant: str
    """Variant of the model ('-' when the model is missing from the run's manifest)."""
    metric: str
    """A registered metric's gate check (mean_emb_dist, flip_rate, answer_flip_rate, ...: harness.score.registry),
    early_divergence_share@k or accuracy_drop."""
    threshold: float
    """The upper limit of the metric from gate.yaml; the check passes when value <= threshold."""
    relative: bool
    """True: ``value`` is metric - noise floor."""
    length: int
    """Output length L (tokens) the neighbourhood is scored at."""
    value: float | None
    """The compared value; None when it could not be computed (see ``message``)."""
    metric_value: float | None
    """The metric itself over the perturbed pairs."""
    floor: float | None
    """The same metric on the neighbourhood's identical pair(s)."""
    n_pairs: int
    """Perturbed pairs scored (identical pairs excluded)."""
    n_expected: int
    """Perturbed pairs in the neighbourhood; n_expected - n_pairs were not scored (audit drop or model failure)."""
    verdict: str
    """PASS or FAIL; a check that could not be evaluated fails."""
    message: str
    """Why it failed, or a one-line account of a pass."""

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def label(self) -> str:
        if self.metric == "noise_floor":  # harness.gate.floor: no threshold, a verdict on the identical pairs
            return "noise floor exact (identical pairs reproduce)"
        rel = " - floor" if self.relative else ""
        return f"{self.metric}{rel} <= {self.threshold:g}"


@dataclass(frozen=True)
class GateResult:
    exit_code: int
    """0 every check passed, 1 at least one failed (harness.errors)."""
    run_dir: Path
    """The run directory of the gate's pipeline run."""
    checks: tuple[GateCheck, ...]
    """Every check, in neighbourhood x model x variant x metric order."""
    junit: Path
    """The JUnit XML file written."""
    summary_md: Path
    """gate-summary.md in the run directory."""
    terminal: str
    """The table printed at the end."""

    @property
    def failed(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)


@dataclass(frozen=True)
class ModelRun:
    """One model x variant of the run, as the manifest recorded it."""

    model: str
    """Model name."""
    variant: str
    """Variant; '-' for a configured model the manifest lacks."""
    status: str
    """The cell's status in the manifest (ok, failed, failed-numerics, ...); 'missing' when not recorded, 'unknown' when the record has none."""
    error: str
    """The cell's one-line error; '' when none."""
    seconds: float
    """Sum of the cell's recorded timings, seconds (0.0 when missing)."""
    revision: str
    """Resolved (else requested) model revision; '' when none was recorded."""
