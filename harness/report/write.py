"""Writing summary.json and the reports of a run directory from its files alone.

Both `stabprobe run` (at the end) and `stabprobe report RUN_DIR` call
:func:`write_reports`, so a rebuilt report is the same as the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.core import rundir
from harness.errors import InputError
from harness.summary.collapse import collapse_flags, drift_table
from harness.summary.flags import compute_flags, scaffold_table
from harness.report.html import REPORT_HTML, render_html
from harness.report.markdown import render_markdown
from harness.core.rundir_read import read_manifest, read_table
from harness.summary.build import build_summary
from harness.summary.traps import answer_missing_flags, loop_flags, loop_table, unresponsive_flags, unresponsive_table
from harness.summary.engines import engine_table

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


def write_reports(run_dir: Path) -> dict[str, Any]:
    """summary.json, report.md and report.html from manifest.json and the parquet files; returns the summary."""
    run_dir = Path(run_dir)
    from harness.core.memo import Memo

    manifest, pairs, audit, gens = load_run_tables(run_dir)
    memo = Memo(manifest.get("config", {}).get("cache_dir"))
    summary = build_summary(pairs, audit, manifest, memo)
    summary["flags"] = compute_flags(pairs, gens, manifest)
    drift_path = run_dir / rundir.DRIFT
    drift = pd.read_parquet(drift_path) if drift_path.is_file() else pd.DataFrame(columns=pairs.columns)
    summary["drift"] = drift_table(pairs, drift)
    summary["flags"] += collapse_flags(summary["drift"])
    summary["unresponsive"] = unresponsive_table(pairs, gens)
    summary["flags"] += unresponsive_flags(summary["unresponsive"])
    summary["scaffold"] = scaffold_table(gens)
    summary["loops"] = loop_table(gens)
    summary["flags"] += loop_flags(summary["loops"]) + answer_missing_flags(summary["cells"])
    summary["engines"] = engine_table(gens, manifest)
    rundir.atomic_write_json(run_dir / rundir.SUMMARY, summary)
    rundir.atomic_write_text(run_dir / rundir.REPORT_MD, render_markdown(summary, manifest))
    rundir.atomic_write_text(run_dir / REPORT_HTML, render_html(summary, manifest, pairs, gens, memo))
    return summary
