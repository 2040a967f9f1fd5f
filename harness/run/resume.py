"""Finishing and joining runs from their directories: ``--resume``, ``merge`` and ``stabprobe report``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from harness.core import rundir
from harness.core.threads import thread_policy
from harness.errors import InputError
from harness.report.write import write_reports
from harness.core.rundir_read import read_table
from harness.run.cell import EMPTY as EMPTY_CELL, cell_dir, is_finished, read_cell_record
from harness.run.config import LADDER_FILE, RunConfig, check_environment, config_from_run_dir
from harness.run.records import RunResult
from harness.run.manifest import device_info, library_versions, write_manifest
from harness.schema import Manifest
from harness.run.pipeline import finalize, plan_cells, run_in
from harness.score.embedder import Embedder


def resume(run_dir: Path, **overrides) -> RunResult:
    """Finish an interrupted run: only cells without a cell.json are run (``threads`` among the overrides: the
    thread policy of harness.core.threads, as for a new run; the resumed entry records the count)."""
    run_dir = Path(run_dir)
    cfg, manifest = config_from_run_dir(run_dir, **overrides)
    with thread_policy(cfg.threads):
        return _resume(run_dir, cfg, manifest, overrides)


def _resume(run_dir: Path, cfg: RunConfig, manifest: Manifest, overrides: dict[str, Any]) -> RunResult:
    if manifest.status == "complete":
        raise InputError(str(run_dir), "status", "run is already complete")
    check_environment(cfg)
    resumed = {"argv": list(overrides.get("argv", ())), "libraries": library_versions(), "device": device_info()}
    manifest = manifest.evolve(status="running", resumed=[*(manifest.resumed or []), resumed])
    write_manifest(run_dir, manifest)
    return run_in(run_dir, cfg, manifest, Embedder(cfg.embedder, cache_dir=cfg.cache_dir))


def merge_runs(dirs: Sequence[Path], out: Path, argv: Sequence[str] = (), threads: int | None = None) -> RunResult:
    """Join shard run directories (same config) into one new run directory, under the thread policy (the merge
    computes the teacher-forced drift: harness.run.tf_drift) like a run."""
    with thread_policy(threads):
        return _merge_runs(dirs, out, argv)


def _merge_runs(dirs: Sequence[Path], out: Path, argv: Sequence[str]) -> RunResult:
    import shutil

    if not dirs:
        raise InputError("merge", "", "expected one or more run directories")
    configs = [config_from_run_dir(Path(d)) for d in dirs]
    base_cfg, base_manifest_ = configs[0]
    key = _merge_key(base_manifest_)
    for d, (_, m) in zip(dirs, configs):
        if _merge_key(m) != key:
            raise InputError(str(d), "config", "was made with a different configuration than the first directory")
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
    return finalize(run_dir, cfg, manifest, embedder)


def _merge_key(manifest: Manifest) -> str:
    conf = {k: v for k, v in manifest.config.to_json_dict().items() if k not in ("shard", "executor", "cache_dir")}
    return json.dumps(conf, sort_keys=True, default=str)


def rebuild_report(run_dir: Path) -> dict[str, Any]:
    """`stabprobe report`: summary.json and the reports from the parquet files and the manifest alone."""
    return write_reports(Path(run_dir))
