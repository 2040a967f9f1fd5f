"""The skeleton every study shares (`stabprobe geometry`, `stretch`, `floor`): one run directory, one manifest,
one loop over the models in which a model that fails is recorded and the others go on.

A study supplies its configuration record and a function that measures one
model; its maths, tables and reports stay in its own package. Inside
:func:`study_run`:

- the thread policy (harness.core.threads.thread_policy) is in force from
  before the run directory exists to the end, so the manifest's
  ``device.torch_threads`` is the count the study computed with;
- the manifest is written with status ``running``, rewritten after every model,
  and ends ``complete``; an exception escaping the block (a bug, a full disk,
  Ctrl-C) leaves it ``crashed`` or ``interrupted`` with the error, as a run's
  does (harness.run.pipeline), instead of ``running`` for ever.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from harness.core import rundir, runlock
from harness.core.jsonsafe import json_safe
from harness.core.threads import thread_policy
from harness.errors import EXIT_MODEL_FAILED, EXIT_OK, error_line
from harness.models.registry import ModelEntry
from harness.run.manifest import base_manifest

T = TypeVar("T")


@dataclass(frozen=True)
class ModelOutcome(Generic[T]):
    """What measuring one model gave: its result, or the one-line error it failed with."""

    entry: ModelEntry
    """The model."""
    result: T | None
    """The study's measure function's return value; None when the model failed."""
    error: str | None
    """``Type: message`` on one line (harness.errors.error_line); None when the model succeeded."""

    def summary_entry(self, ok: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
        """The model's entry in a study summary: ``{"status": "ok", **ok(result)}``, or its status and error."""
        if self.error is not None:
            return {"status": "failed", "error": self.error}
        return {"status": "ok", **ok(self.result)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class StudyRun:
    """A study's run directory while it runs, and the manifest it keeps there."""

    run_dir: Path
    """The run directory (``<out>/<stamp>-<hex>-<command>``)."""
    manifest: dict[str, Any]
    """manifest.json's content (base_manifest plus the per-model records); rewritten by :meth:`write_manifest`."""

    def write_manifest(self) -> None:
        rundir.atomic_write_json(self.run_dir / rundir.MANIFEST, self.manifest)

    def measure_models(self, models: Sequence[ModelEntry], measure: Callable[[ModelEntry, dict[str, Any]], T],
                       *, record_seconds: bool = False) -> list[ModelOutcome[T]]:
        """``measure(entry, record)`` for every model in order; ``record`` is the model's manifest record, which
        ``measure`` may fill (info, timings). A model whose ``measure`` raises is recorded ``failed`` with its
        error and a short traceback, and the next model goes on; the manifest is rewritten after each model."""
        outcomes: list[ModelOutcome[T]] = []
        for entry in models:
            record: dict[str, Any] = {"name": entry.name, "source": entry.source, "requested_revision": entry.revision}
            self.manifest["models"].append(record)
            t0 = time.perf_counter()
            try:
                result = measure(entry, record)
                record["status"] = "ok"
                outcomes.append(ModelOutcome(entry, result, None))
            except Exception as exc:  # noqa: BLE001 - recorded; the other models go on
                err = error_line(exc)
                record.update(status="failed", error=err, traceback=traceback.format_exc(limit=4))
                outcomes.append(ModelOutcome(entry, None, err))
            if record_seconds:
                record["seconds"] = round(time.perf_counter() - t0, 2)
            self.write_manifest()
        return outcomes

    def write_summary(self, name: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the study's summary JSON (NaN/inf as null, harness.core.jsonsafe) and return what was written."""
        safe = json_safe(summary)
        rundir.atomic_write_json(self.run_dir / name, safe)
        return safe

    @property
    def exit_code(self) -> int:
        """3 when any model failed (its record says why), else 0."""
        return EXIT_MODEL_FAILED if any(m.get("status") != "ok" for m in self.manifest["models"]) else EXIT_OK


@contextmanager
def study_run(command: str, out: Path, argv: Sequence[str], config: dict[str, Any] | Callable[[Path], dict[str, Any]],
              *, threads: int | None = None, libraries: dict[str, str | None] | None = None) -> Iterator[StudyRun]:
    """Create ``<out>/<stamp>-<hex>-<command>`` and its manifest; yield the study; mark the manifest at the end.

    ``config``: the manifest's ``config`` record, or a function of the run directory that returns it (floor
    writes its random-init controls inside the run directory first). ``argv``: the command line (empty:
    ``sys.argv``). ``libraries``: versions recorded next to the usual ones (harness.run.manifest).
    """
    with thread_policy(threads):
        run_dir = rundir.new_run_dir(out, suffix=f"-{command}")
        record = config(run_dir) if callable(config) else config
        manifest = base_manifest(command, list(argv or sys.argv), record)
        manifest["libraries"].update(libraries or {})
        study = StudyRun(run_dir, manifest)
        with runlock.hold(run_dir):  # one writer; a writer that dies is recognised (harness.core.runlock)
            study.write_manifest()
            try:
                yield study
            except BaseException as exc:
                manifest["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
                manifest["error"] = error_line(exc)
                try:
                    study.write_manifest()
                except OSError:
                    pass  # the disk that failed the study: the raised error says why, the lock says the writer died
                raise
            manifest["status"] = "complete"
            study.write_manifest()
