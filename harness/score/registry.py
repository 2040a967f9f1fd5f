"""The pair-metric registry: what every stage reads about the metrics, derived from their one declaration.

The built-in metrics are declared in harness.score.pair_metrics (``BUILTIN``); a plug-in or a test adds one
with :func:`register` (or :func:`registered`, which removes it again). Everything below is computed from the
registry at the time of the call, so a metric registered before a run reaches every place at once:

- :func:`pair_score_class`: the PairScore record (PairIdentity's fields, then one field per metric, in order);
  :func:`pair_columns` its pairs.parquet columns;
- :func:`aggregated` / :func:`summary_metrics`: the means of summary.json's cells (harness.summary.build);
- :func:`report_metrics`: the report's distances columns (harness.report.markdown);
- :func:`determinism_columns` / :func:`answer_span_columns`: the determinism verdict (harness.summary.determinism);
- :func:`gate_metrics`: the gate's ``max_<check>`` thresholds (harness.gate.schema, harness.gate.run);
- :func:`scorer_version`: part of every cached scored table's key (harness.run.keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

from harness.score.pair_metrics import BUILTIN
from harness.score.records import GateUse, MetricSpec, PairIdentity

KERNEL_VERSION = "4"
"""The scoring code shared by every metric (sides, scaffold split, embeddings, text decoding): bumped when it
changes what a cached scored table would hold. History (the former SCORER_VERSION): 2: non-finite decodes fail
the cell (a cached "ok" from before may hold them); 3: answer-span metrics nan when a side never closed its
scaffold; 4: answer correctness."""

_PY_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}

_specs: list[MetricSpec] = list(BUILTIN)


def metrics() -> tuple[MetricSpec, ...]:
    """Every registered pair metric, in pairs.parquet column order."""
    return tuple(_specs)


def spec(name: str) -> MetricSpec:
    for s in _specs:
        if s.name == name:
            return s
    raise KeyError(f"no pair metric named {name!r} (registered: {', '.join(s.name for s in _specs)})")


def _check(s: MetricSpec) -> None:
    taken = {f.name for f in dataclasses.fields(PairIdentity)} | {m.name for m in _specs}
    if not s.name.isidentifier() or s.name in taken:
        raise ValueError(f"pair metric {s.name!r}: not an identifier, or already a pairs.parquet column")
    if s.dtype not in _PY_TYPES:
        raise ValueError(f"pair metric {s.name!r}: dtype {s.dtype!r} (expected one of {', '.join(_PY_TYPES)})")
    if not s.doc.strip():
        raise ValueError(f"pair metric {s.name!r}: no doc (it is the PairScore field's documentation)")
    if (s.aggregate == "rate" and s.dtype != "bool") or (s.aggregate == "mean" and s.dtype not in ("float", "int")):
        raise ValueError(f"pair metric {s.name!r}: aggregate {s.aggregate!r} does not fit dtype {s.dtype!r}")
    if s.nan and s.dtype != "float":
        raise ValueError(f"pair metric {s.name!r}: only a float column can be NaN")
    if s.report and s.aggregate == "none":
        raise ValueError(f"pair metric {s.name!r}: a report column needs an aggregate (the report reads summary means)")
    if s.gate is not None and s.gate.check in {m.gate.check for m in _specs if m.gate is not None}:
        raise ValueError(f"pair metric {s.name!r}: gate check {s.gate.check!r} is taken")


def register(s: MetricSpec) -> None:
    """Add a pair metric after the registered ones (its column goes last in pairs.parquet)."""
    _check(s)
    _specs.append(s)


def unregister(name: str) -> None:
    _specs.remove(spec(name))


@contextmanager
def registered(s: MetricSpec) -> Iterator[MetricSpec]:
    """``s`` registered for the duration of the block (tests, one-off studies)."""
    register(s)
    try:
        yield s
    finally:
        unregister(s.name)


def pair_columns() -> list[str]:
    """pairs.parquet's (and drift.parquet's leading) columns: the pair's identity, then every metric."""
    return [f.name for f in dataclasses.fields(PairIdentity)] + [s.name for s in _specs]


def _doc(specs: tuple[MetricSpec, ...]) -> str:
    lines = ["One pairs.parquet row: the pair's identity (PairIdentity), then every registered metric.", ""]
    for s in specs:
        extra = "; ".join(x for x in (s.unit and f"unit: {s.unit}", s.nan and f"nan: {s.nan}") if x)
        lines.append(f"{s.name} ({s.dtype}): {s.doc}" + (f" [{extra}]" if extra else ""))
    return "\n".join(lines)


@lru_cache(maxsize=8)
def _score_class(specs: tuple[MetricSpec, ...]) -> type:
    fields: list[Any] = [(f.name, f.type) for f in dataclasses.fields(PairIdentity)]
    fields += [(s.name, s.dtype) for s in specs]  # type names as strings, as in every records.py
    cls = dataclasses.make_dataclass("PairScore", fields, frozen=True, namespace={"__doc__": _doc(specs)})
    cls.__module__ = __name__
    return cls


def pair_score_class() -> type:
    """The PairScore record of the metrics registered now (one class per registry state, reused)."""
    return _score_class(tuple(_specs))


def summary_metrics() -> tuple[str, ...]:
    """The metrics summary.json's cells carry a mean and a CI of (aggregate mean or rate), in column order."""
    return tuple(s.name for s in _specs if s.aggregate != "none")


def report_metrics() -> tuple[MetricSpec, ...]:
    """The metrics with a column in the report's distances table, in column order."""
    return tuple(s for s in _specs if s.report)


def determinism_columns() -> tuple[str, ...]:
    """Columns that must be exactly 0 on the identical rung of a deterministic run."""
    return tuple(s.name for s in _specs if s.identical_zero)


def answer_span_columns() -> tuple[str, ...]:
    """Columns read on the answer span: missing by construction where a side has no answer span."""
    return tuple(s.name for s in _specs if s.answer_span)


def optional_columns() -> tuple[str, ...]:
    """Columns computed only where the cell can (MetricSpec.optional): NaN there is no evidence either way."""
    return tuple(s.name for s in _specs if s.optional)


def gate_metrics() -> tuple[tuple[str, GateUse], ...]:
    """(column, gate use) of every metric the gate may check, in column order."""
    return tuple((s.name, s.gate) for s in _specs if s.gate is not None)


def scorer_version() -> str:
    """KERNEL_VERSION and a digest of the metrics' columns, types and versions: a metric added, removed, moved
    or recomputed (its ``version`` bumped) gives a new version, so no cached scored table from before is reused."""
    material = [[s.name, s.dtype, s.version] for s in _specs]
    digest = hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()[:12]
    return f"{KERNEL_VERSION}-{digest}"


PairScore = pair_score_class()
"""The PairScore record of the built-in metrics (for annotations and for tables built without a run)."""
