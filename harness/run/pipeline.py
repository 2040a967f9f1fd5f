"""`stabprobe run` as a library call: ladder -> audit -> decode -> score -> summary -> report.

The work is split into cells (one per model x variant, see harness.run.cell),
run by an executor (in-process, or Ray tasks), then merged: the top-level
tables, the drift between variants, the manifest and the reports are built
from the cell files alone. That is what makes --resume, --shard/merge and the
Ray executor produce the same rows as one uninterrupted local run.
"""

from __future__ import annotations

import logging

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.audit.records import AuditRow
from harness.core import rundir, runlock
from harness.core.checked import counts as cache_counts, first_write_error
from harness.core.threads import thread_policy
from harness.errors import EXIT_ENVIRONMENT, EXIT_MODEL_FAILED, EXIT_OK
from harness.report.markdown import terminal_summary
from harness.core.rundir_read import read_table
from harness.report.write import write_reports
from harness.run.cell import EMPTY as EMPTY_CELL, cell_dir, is_finished, read_cell_record, run_cell
from harness.run.config import (  # noqa: F401 - RunConfig: the library API (README) imports it from here
    LADDER_FILE,
    RunConfig,
    config_record,
    ladder_record,
    validate_config,
    variants_for,
)
from harness.run.manifest import run_manifest, write_manifest
from harness.run.worker_memory import resolved_workers
from harness.run.records import Cell, CellSettings, RunResult
from harness.score import drift
from harness.score.embedder import Embedder
from harness.score.registry import pair_columns
from harness.schema import CellRecord, Manifest


log = logging.getLogger(__name__)

def plan_cells(cfg: RunConfig) -> list[Cell]:
    """Every cell of the run, in a fixed order (shards and resume index into it)."""
    return [Cell(e, v) for e in cfg.models for v in variants_for(cfg, e)]


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    if shard is None:
        return list(cells)
    i, n = shard
    return [c for j, c in enumerate(cells) if j % n == i]


def enable_gpu_determinism() -> None:
    """Deterministic CUDA kernels where torch has them, set before CUDA initialises.

    On CPU nothing changes (the identical rung measures what the CPU kernels do).
    The flags in force are recorded in the manifest (determinism_flags); the
    identical rung, not these flags, decides the verdict.
    """
    import os

    import torch

    if not torch.cuda.is_available():
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility needs a fixed workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _settings(cfg: RunConfig, manifest: Manifest) -> CellSettings:
    return CellSettings(
        pairs=tuple(cfg.ladder.pairs), lengths=tuple(cfg.lengths), batch_size=cfg.batch_size, batching=cfg.batching,
        embedder=cfg.embedder, cache_dir=None if cfg.cache_dir is None else str(cfg.cache_dir), progress=cfg.progress,
        capture=cfg.capture, store_full_dist=cfg.store_full_dist, twin=cfg.twin,
        libraries=manifest.libraries, device=manifest.device,
        # Ray without --workers: one worker per cell task (the cells are the tasks).
        workers=cfg.workers if cfg.executor == "local" else (cfg.workers or 1), auto_workers=resolved_workers(cfg),
        worker_pool="ray" if cfg.executor == "ray" else "local",
    )


def _execute(cfg: RunConfig, cells: Sequence[Cell], run_dir: Path, manifest: Manifest, embedder: Embedder) -> None:
    from harness.run.parallel import close_pools, prestart_pool

    settings = _settings(cfg, manifest)
    todo = [c for c in cells if not is_finished(run_dir, c)]
    if todo and cfg.executor == "local" and cfg.workers:
        prestart_pool(cfg.workers)  # asked for: start importing now (the default waits to see a cell worth it)
    try:
        if cfg.executor == "ray":
            from harness.run.executor_ray import run_cells_ray

            run_cells_ray(todo, settings, run_dir, cfg.loader, cfg.ray_address, embedder.encode)
            return
        for cell in todo:
            run_cell(cell, settings, run_dir, cfg.loader, embedder.encode)
    finally:
        close_pools()  # the decode workers of the cells (harness.run.workers), if any were started


def run(cfg: RunConfig) -> RunResult:
    """The whole run, under the thread policy (harness.core.threads: the CLI and a Python caller get the same)."""
    from harness.run.parallel import close_pools

    try:
        _prestart_workers(cfg)  # before this process imports torch (the thread policy does): the imports overlap
        with thread_policy(cfg.threads):
            return _run(cfg)
    finally:
        close_pools()  # the decode workers (harness.run.workers), also where the run failed before its cells


def _run(cfg: RunConfig) -> RunResult:
    validate_config(cfg)
    embedder = Embedder(cfg.embedder, cache_dir=cfg.cache_dir)  # an unusable --embedder is an input error: before any directory exists
    run_dir = rundir.new_run_dir(cfg.out)
    with runlock.hold(run_dir):  # one writer per run directory; released however this process ends
        enable_gpu_determinism()
        manifest = run_manifest(cfg.command, list(cfg.argv), config_record(cfg, embedder.info))
        rundir.atomic_write_json(run_dir / LADDER_FILE, ladder_record(cfg.ladder))
        write_manifest(run_dir, manifest)
        return run_in(run_dir, cfg, manifest, embedder)


def _prestart_workers(cfg: RunConfig) -> None:
    """``--workers N``: spawn the decode workers now and bind the first cell's model in them, so their imports and
    weights overlap the embedder's load, the manifest and the first cell's audit (harness.run.parallel)."""
    from harness.models.variants import parse_variant
    from harness.run.parallel import prestart_pool

    from harness.run.worker_memory import check_workers

    if cfg.executor != "local" or not isinstance(cfg.workers, int) or cfg.workers < 2:
        return
    check_workers(cfg)  # a count that does not fit is refused before anything starts (validate_config says it again)
    cells = [c for c in shard_cells(plan_cells(cfg), cfg.shard) if parse_variant(c.variant).engine in (None, "hf")]
    prestart_pool(cfg.workers, (cells[0].entry, cells[0].variant, cfg.loader) if cells else None)


def run_in(run_dir: Path, cfg: RunConfig, manifest: Manifest, embedder: Embedder) -> RunResult:
    cells = shard_cells(plan_cells(cfg), cfg.shard)
    t0 = time.perf_counter()
    try:
        _execute(cfg, cells, run_dir, manifest, embedder)
    except BaseException as exc:
        # Finished cells stay on disk; `stabprobe run --resume RUN_DIR` redoes only the rest.
        mark_ended(run_dir, manifest.evolve(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed",
            error=f"{type(exc).__name__}: {exc}"[:500],
            models=[r for c in plan_cells(cfg) if (r := read_cell_record(run_dir, c))]))
        raise
    manifest = manifest.evolve(phase_seconds={**(manifest.phase_seconds or {}), "cells": round(time.perf_counter() - t0, 3)})
    return finalize(run_dir, cfg, manifest, embedder)


def finalize(run_dir: Path, cfg: RunConfig, manifest: Manifest, embedder: Embedder) -> RunResult:
    """Merge the cell files into the run's tables, drift, manifest and reports."""
    t0 = time.perf_counter()
    before = cache_counts()  # the drift's embeddings and the report memos are cache entries too
    all_cells = plan_cells(cfg)
    finished = [(cell, rec) for cell in all_cells if (rec := read_cell_record(run_dir, cell)) is not None]
    records = [rec for _, rec in finished]
    log.info("merging %d cells' tables (and the drift between variants)", len(finished))
    gens_df, pairs_df, drift_df, tf_read, tf_seconds = _merge_tables(run_dir, cfg, finished, embedder)
    manifest = manifest.evolve(phase_seconds={**(manifest.phase_seconds or {}), **tf_seconds})
    manifest = _merged_manifest(manifest, all_cells, records, pairs_df.empty, tf_read, t0)
    # "complete" only once every promised file exists: until the reports are written the manifest says
    # "running" (a crash that cannot even rewrite it, e.g. on a full disk, is then recognised by the next
    # `report`/`--resume` through the run lock: harness.core.runlock). The reports show the final status.
    write_manifest(run_dir, manifest.evolve(status="running") if manifest.status == "complete" else manifest)
    log.info("writing summary.json, report.md and report.html")
    try:
        summary = write_reports(run_dir, status=manifest.status)
    except BaseException as exc:
        # The parquet files are whole, but a run without its reports is not complete.
        mark_ended(run_dir, manifest.evolve(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed",
            error=f"{REPORTS_FAILED}{type(exc).__name__}: {exc}"[:500]))
        raise
    write_error = next((r.cache_write_error for r in records if r.cache_write_error), None)
    after = cache_counts()
    if after != before:
        manifest = manifest.evolve(
            cache_entries_rejected=manifest.cache_entries_rejected + after["rejected"] - before["rejected"],
            cache_write_failures=manifest.cache_write_failures + after["write_failures"] - before["write_failures"])
        write_error = write_error or first_write_error()
    manifest = manifest.evolve(determinism=summary["determinism"])  # computed once, by the summary builder
    write_manifest(run_dir, manifest)
    failed = [r for r in records if r.status != "ok"]
    terminal = terminal_summary(summary)
    if manifest.status == "empty":
        terminal += f"\n{manifest.error}"
    if manifest.cache_entries_rejected:
        terminal += f"\ncache entries rejected: {manifest.cache_entries_rejected} (damaged or unreadable; recomputed)"
    code = EXIT_MODEL_FAILED if failed or manifest.status == "empty" else EXIT_OK
    if manifest.command == "merge" and manifest.cells_missing:
        # A merge is meant to give the whole plan: a shard that died is said here, not only in the manifest.
        terminal += (f"\ncells missing: {', '.join(manifest.cells_missing)} (no shard finished them; resume that "
                     "shard, then merge again)")
        code = EXIT_MODEL_FAILED
    if manifest.cache_write_failures:
        # The results are whole; the machine could not keep the cache: the environment's exit code, not a model's.
        write_manifest(run_dir, manifest.evolve(cache_write_error=write_error))
        terminal += (f"\ncache not written: {write_error} ({manifest.cache_write_failures} cache writes failed; "
                     "the results are complete but were not cached)")
        code = EXIT_ENVIRONMENT
    return RunResult(run_dir, code, summary, terminal)


REPORTS_FAILED = "writing reports: "
"""How the error of a run whose reports failed starts (`stabprobe report` and --resume finish such a run)."""


def mark_ended(run_dir: Path, manifest: Manifest) -> None:
    """Record how a run ended, best effort: when even this write fails (the disk that failed the run is full),
    the manifest stays ``running`` and the run lock tells the next reader the writer died."""
    try:
        write_manifest(run_dir, manifest)
    except OSError:
        pass


def _merge_tables(run_dir: Path, cfg: RunConfig, finished: list[tuple[Cell, CellRecord]], embedder: Embedder):
    """The run's audit, generations, pairs and drift tables from the cell files (written here); returns
    (generations, pairs, drift, what the teacher-forced drift read)."""
    audits, gens, pairs = [], [], []
    for cell, rec in finished:
        d = cell_dir(run_dir, cell)
        if rec.status in ("ok", EMPTY_CELL):
            audits.append(read_table(d / "audit.parquet"))  # an empty cell's audit says why nothing was scored
        if rec.status == "ok":
            gens.append(read_table(d / "generations.parquet"))
            pairs.append(read_table(d / "pairs.parquet"))
    audit_df = _concat(audits, [f.name for f in dataclasses.fields(AuditRow)])
    gens_df = _concat(gens, None)
    pairs_df = _concat(pairs, pair_columns())
    drift_df = _concat(drift.drift_frames(gens_df, cfg.models, cfg.lengths, embedder.encode), pair_columns())
    # Teacher-forced drift next to the free-running one: the variant read on the reference's tokens.
    from harness.run.tf_drift import teacher_forced_frame, with_tf_columns

    texts = list(dict.fromkeys(t for p in cfg.ladder.pairs for t in (p.prompt_a, p.prompt_b)))
    # Timed on its own (wall and this process's CPU): its cost is read against the cells' decode (README).
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    tf_df, tf_read = teacher_forced_frame(cfg.models, texts, cfg.lengths, gens_df,
                                          [r.to_json_dict() for _, r in finished], cfg.loader, cfg.cache_dir,
                                          progress=cfg.progress)
    tf_seconds = {"teacher_forced_drift": round(time.perf_counter() - t_wall, 3),
                  "teacher_forced_drift_cpu": round(time.process_time() - t_cpu, 3)}
    drift_df = with_tf_columns(drift_df, tf_df)
    for name, frame in ((rundir.AUDIT, audit_df), (rundir.GENERATIONS, gens_df), (rundir.PAIRS, pairs_df),
                        (rundir.DRIFT, drift_df)):
        rundir.atomic_write_parquet(run_dir / name, frame)
    return gens_df, pairs_df, drift_df, tf_read, tf_seconds


def _merged_manifest(manifest: Manifest, all_cells: Sequence[Cell], records: list[CellRecord], nothing_scored: bool,
                     tf_read: dict[str, Any], t0: float) -> Manifest:
    """The manifest once the cells are merged: their records, what is missing, the status and the counts."""
    missing = [c.name for c in all_cells if not any(r.name == c.entry.name and r.variant == c.variant for r in records)]
    # Complete only when every cell of the whole plan is finished: a shard alone is "partial".
    status, error = ("complete" if not missing else "partial"), {}
    if nothing_scored:
        # A run that scored nothing is never "complete": the audit (written above) says why.
        status, error = "empty", {"error": "nothing scored: " + ("; ".join(
            f"{r.name}--{r.variant}: {r.error or r.status}" for r in records) or "no cell finished")}
    return manifest.evolve(
        teacher_forced_drift=tf_read, models=records, cells_missing=missing, status=status, **error,
        decoded_prompts=int(sum(r.decoded_prompts or 0 for r in records)),
        cached_prompts=int(sum(r.cached_prompts or 0 for r in records)),
        phase_seconds={**(manifest.phase_seconds or {}), "merge": round(time.perf_counter() - t0, 3)},
        # Damaged cache entries are recomputed, never used; failed cache writes leave the results whole
        # (harness.core.checked).
        cache_entries_rejected=int(sum(r.cache_entries_rejected or 0 for r in records)),
        cache_write_failures=int(sum(r.cache_write_failures or 0 for r in records)))


def _concat(frames: list[pd.DataFrame], columns: list[str] | None) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


