"""Ray executor: each cell is a Ray task that writes its own cell directory, or with ``--workers N`` (N > 1)
the cells run one after another in the driver, each cell's decode split over N Ray actors
(harness.run.workers_ray): one cell's prompts then spread over the cluster's nodes.

The driver only schedules; results travel through the run directory, so a
task that dies loses only its own cell (rerun by --resume). On a cluster the
run directory must be on a filesystem every node sees. One GPU per task when
the cluster has GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from harness.run.cell import run_cell
from harness.run.records import Cell, CellSettings


def run_cells_ray(cells: Sequence[Cell], settings: CellSettings, run_dir: Path, loader: Callable,
                  address: str | None = None, embed: Callable | None = None) -> list:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local Ray otherwise writes a token under $HOME
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    try:
        if settings.workers is not None and settings.workers > 1:
            # Within-cell split: the actors take the cluster's CPUs, so the cells themselves are not tasks
            # (a cell task holding a CPU while waiting for its actors could starve them).
            from harness.run.parallel import close_pools

            try:
                return [run_cell(c, settings, Path(run_dir), loader, embed) for c in cells]
            finally:
                close_pools()  # before ray.shutdown: the actors belong to this driver
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(_run_cell_task)
        refs = [task.remote(c, settings, str(run_dir), loader) for c in cells]
        return ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()


def _run_cell_task(cell: Cell, settings: CellSettings, run_dir: str, loader: Callable):
    import torch

    # Ray tasks get one CPU each: more torch threads than that only contend.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    return run_cell(cell, settings, Path(run_dir), loader)
