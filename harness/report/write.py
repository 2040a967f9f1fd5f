"""Writing summary.json, exposure.parquet and the reports of a run directory from its files alone.

Both `stabprobe run` (at the end) and `stabprobe report RUN_DIR` call
:func:`write_reports`, so a rebuilt report is the same as the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.core import rundir
from harness.errors import InputError
from harness.audit.exposure import EXPOSURE, exposure_table
from harness.report.browse import ladder_prompts
from harness.report.html import REPORT_HTML, render_html
from harness.report.markdown import render_markdown
from harness.core.rundir_read import read_manifest, read_table
from harness.schema import Summary
from harness.summary.build import build_summary

PAIR_COLUMNS = ("model", "variant", "rung", "length", "pair_id", "prompt_id")  # prompt_id: the statistical unit
AUDIT_COLUMNS = ("model", "variant", "pair_id", "rung", "kept", "reason")


def load_run_tables(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The manifest and tables of a run directory, validated (exit 2 naming file and field when broken)."""
    run_dir = Path(run_dir)
    for name in (rundir.MANIFEST, rundir.PAIRS, rundir.AUDIT):
        if not (run_dir / name).is_file():
            raise InputError(str(run_dir), name, "missing: not a finished run directory")
    manifest = read_manifest(run_dir)
    pairs = read_table(run_dir / rundir.PAIRS, PAIR_COLUMNS)
    audit = read_table(run_dir / rundir.AUDIT, AUDIT_COLUMNS)
    gens_path = run_dir / rundir.GENERATIONS
    gens = read_table(gens_path) if gens_path.is_file() else None
    return manifest, pairs, audit, gens


def write_reports(run_dir: Path, status: str | None = None) -> dict[str, Any]:
    """summary.json, exposure.parquet, report.md and report.html from manifest.json and the parquet files; returns the summary."""
    run_dir = Path(run_dir)
    from harness.core.memo import Memo

    manifest, pairs, audit, gens = load_run_tables(run_dir)
    if status is not None:  # the status the run ends with once these reports exist (harness.run.pipeline)
        manifest = {**manifest, "status": status}
    memo = Memo(manifest.get("config", {}).get("cache_dir"))
    drift_path = run_dir / rundir.DRIFT
    drift = pd.read_parquet(drift_path) if drift_path.is_file() else None
    exposure = exposure_table(audit)
    # Through the schema: a section the builder misspells or leaves out fails here, before anything is written.
    summary = Summary.model_validate(build_summary(pairs, audit, manifest, memo, generations=gens, drift=drift,
                                                   exposure=exposure)).to_json_dict()
    rundir.atomic_write_parquet(run_dir / EXPOSURE, exposure)
    rundir.atomic_write_json(run_dir / rundir.SUMMARY, summary)
    rundir.atomic_write_text(run_dir / rundir.REPORT_MD, render_markdown(summary, manifest))
    rundir.atomic_write_text(run_dir / REPORT_HTML, render_html(summary, manifest, pairs, gens, memo,
                                                                      ladder_prompts(run_dir)))
    return summary
