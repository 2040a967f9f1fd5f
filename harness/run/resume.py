"""Finishing and joining runs from their directories: ``--resume``, ``merge`` and ``stabprobe report``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from harness.core import rundir, runlock
from harness.core.threads import thread_policy
from harness.errors import InputError
from harness.report.write import write_reports
from harness.core.rundir_read import read_table
from harness.run.cell import EMPTY as EMPTY_CELL, cell_dir, is_finished, read_cell_record
from harness.run.config import LADDER_FILE, RunConfig, check_environment, config_from_run_dir
from harness.run.worker_memory import check_workers
from harness.run.records import RunResult
from harness.run.manifest import device_info, library_versions, write_manifest
from harness.schema import Manifest
from harness.run.pipeline import REPORTS_FAILED, finalize, plan_cells, run_in
from harness.run.scoring import refuse_different_scoring, scoring_inputs
from harness.score.registry import scorer_version
from harness.score.embedder import Embedder


def resume(run_dir: Path, **overrides) -> RunResult:
    """Finish an interrupted run: only cells without a cell.json are run (``threads`` among the overrides: the
    thread policy of harness.core.threads, as for a new run; the resumed entry records the count)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(str(run_dir), "--resume", "not a directory (expected a run directory)")
    with runlock.claim(run_dir):  # refused while another process writes it; a dead writer's "running" -> crashed
        cfg, manifest = config_from_run_dir(run_dir, **overrides)
        with thread_policy(cfg.threads):
            return _resume(run_dir, cfg, manifest, overrides)


def _resume(run_dir: Path, cfg: RunConfig, manifest: Manifest, overrides: dict[str, Any]) -> RunResult:
    if manifest.status == "complete":
        raise InputError(str(run_dir), "status", "run is already complete")
    check_environment(cfg)
    check_workers(cfg)
    embedder = Embedder(cfg.embedder, cache_dir=cfg.cache_dir)
    # The embedder directory (or this harness's metrics) may have changed since the run began: cells scored
    # before and after would not be comparable.
    refuse_different_scoring(str(run_dir / rundir.MANIFEST), scoring_inputs(manifest),
                             scoring_inputs(manifest, dataclasses.asdict(embedder.info), scorer_version()),
                             "the run and this --resume would score")
    resumed = {"argv": list(overrides.get("argv", ())), "libraries": library_versions(), "device": device_info()}
    manifest = manifest.evolve(status="running", resumed=[*(manifest.resumed or []), resumed])
    write_manifest(run_dir, manifest)
    return run_in(run_dir, cfg, manifest, embedder)


def merge_runs(dirs: Sequence[Path], out: Path, argv: Sequence[str] = (), threads: int | None = None) -> RunResult:
    """Join shard run directories (same config) into one new run directory, under the thread policy (the merge
    computes the teacher-forced drift: harness.run.tf_drift) like a run."""
    with thread_policy(threads):
        return _merge_runs(dirs, out, argv)


def _merge_runs(dirs: Sequence[Path], out: Path, argv: Sequence[str]) -> RunResult:
    import shutil

    if not dirs:
        raise InputError("merge", "", "expected one or more run directories")
    for d in dirs:  # a shard still being written is refused; one whose writer died is marked crashed
        if Path(d).is_dir():
            with runlock.claim(Path(d)):
                pass
    configs = [config_from_run_dir(Path(d)) for d in dirs]
    base_cfg, base_manifest_ = configs[0]
    key = _merge_key(base_manifest_)
    for d, (_, m) in zip(dirs, configs):
        if _merge_key(m) != key:
            raise InputError(str(d), "config", "was made with a different configuration than the first directory")
        refuse_different_scoring(str(Path(d) / rundir.MANIFEST), scoring_inputs(base_manifest_), scoring_inputs(m),
                                 "the shards were scored")
    for d in dirs:  # damaged shard files are refused before the merged directory exists
        for cell in plan_cells(base_cfg):
            rec = read_cell_record(Path(d), cell)
            if rec is not None and rec.status in ("ok", EMPTY_CELL):
                names = ("audit", "generations", "pairs") if rec.status == "ok" else ("audit",)
                for name in names:
                    read_table(cell_dir(Path(d), cell) / f"{name}.parquet")
    embedder = Embedder(base_cfg.embedder, cache_dir=base_cfg.cache_dir)
    run_dir = rundir.new_run_dir(out, suffix="-merged")
    for d in dirs:
        for cell in plan_cells(base_cfg):
            src = cell_dir(Path(d), cell)
            if (src / "cell.json").is_file() and not is_finished(run_dir, cell):
                shutil.copytree(src, cell_dir(run_dir, cell))
    shutil.copy2(Path(dirs[0]) / LADDER_FILE, run_dir / LADDER_FILE)
    manifest = base_manifest_.evolve(command="merge", argv=list(argv), merged_from=[str(d) for d in dirs],
                                     config=base_manifest_.config.evolve(shard=None))
    cfg = dataclasses.replace(base_cfg, shard=None, out=Path(out))
    with runlock.hold(run_dir):
        return finalize(run_dir, cfg, manifest, embedder)


def _merge_key(manifest: Manifest) -> str:
    conf = {k: v for k, v in manifest.config.to_json_dict().items() if k not in ("shard", "executor", "cache_dir")}
    return json.dumps(conf, sort_keys=True, default=str)


def rebuild_report(run_dir: Path) -> dict[str, Any]:
    """`stabprobe report`: summary.json and the reports from the parquet files and the manifest alone.

    A run whose cells were all merged but whose reports failed (or whose writer died while writing them) is
    finished here: once the reports exist its status becomes ``complete``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return write_reports(run_dir)  # names the missing directory
    with runlock.claim(run_dir):
        try:
            manifest = json.loads((run_dir / rundir.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}  # write_reports names the damage (exit 2)
        finishing = _reports_were_pending(manifest)
        summary = write_reports(run_dir, status="complete" if finishing else None)
        if finishing:
            rundir.atomic_write_json(run_dir / rundir.MANIFEST, {**{k: v for k, v in manifest.items() if k != "error"},
                                                                 "status": "complete",
                                                                 "determinism": summary["determinism"]})
        return summary


def _reports_were_pending(manifest: dict[str, Any]) -> bool:
    """Merged into a whole run (every cell, the merge phase done) but ended before its reports existed."""
    if not isinstance(manifest, dict) or manifest.get("status") not in ("crashed", "interrupted"):
        return False
    merged = "merge" in (manifest.get("phase_seconds") or {}) and not manifest.get("cells_missing")
    error = str(manifest.get("error") or "")
    return merged and (error.startswith(REPORTS_FAILED) or error == runlock.DEAD_WRITER)
