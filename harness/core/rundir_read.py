"""Reading a run directory back (`report`, `run --resume`, `merge`, `compare`), validated.

A run directory can be truncated by a full disk, edited by hand or replaced by
something else entirely; whatever is wrong with it is reported as one line
naming the file and the field (exit 2), never as a traceback from deep inside
pandas or a KeyError on a missing key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from pydantic import BaseModel, ValidationError

from harness.core import rundir
from harness.errors import InputError, pydantic_error_to_input_error
from harness.core.yaml_strict import read_bytes_limited
from harness.schema import CellRecord, Manifest, Summary, check_schema_version

MAX_RUN_JSON_BYTES = 512 * 1024 * 1024
"""ladder.json of a large published pair file is tens of MB; a manifest is kilobytes."""


def read_json(path: Path, limit: int = MAX_RUN_JSON_BYTES) -> Any:
    data = read_bytes_limited(path, field="file", limit=limit)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(str(path), "(top level)", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(str(path), "(nesting)", "nested too deeply") from None


def read_record(path: Path, model: type[BaseModel]):
    """One saved JSON record of a run directory through its schema model (harness.schema): the version
    checked first (an older run directory is one line, not a field-by-field complaint), then every key."""
    raw = read_json(path)
    check_schema_version(str(path), raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error_to_input_error(str(path), exc) from None


def load_manifest(run_dir: Path) -> Manifest:
    """manifest.json of a run directory, typed (exit 2 naming file and field when it is not one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(str(run_dir), "", "not a directory (expected a run directory)")
    path = run_dir / rundir.MANIFEST
    if not path.is_file():
        raise InputError(str(run_dir), rundir.MANIFEST, "missing: not a stabprobe run directory")
    return read_record(path, Manifest)


def read_manifest(run_dir: Path, rebuild: bool = False) -> dict[str, Any]:
    """manifest.json as the dict it was written from, validated through :class:`~harness.schema.Manifest`
    (for code that reads it by key: the report renderers, the resume flags check).

    ``rebuild`` is accepted for old callers: the whole manifest, configuration included, is always checked.
    """
    return load_manifest(run_dir).to_json_dict()


def load_cell_record(path: Path) -> CellRecord:
    """A cell.json, typed."""
    return read_record(Path(path), CellRecord)


def load_summary(run_dir: Path) -> Summary:
    """summary.json of a run directory, typed."""
    path = Path(run_dir) / rundir.SUMMARY
    if not path.is_file():
        raise InputError(str(run_dir), rundir.SUMMARY, "missing: run `stabprobe report` on the run directory")
    return read_record(path, Summary)


def read_ladder_record(run_dir: Path, name: str) -> dict[str, Any]:
    path = Path(run_dir) / name
    if not path.is_file():
        raise InputError(str(run_dir), name, "missing: not a stabprobe run directory")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise InputError(str(path), "(top level)", f"expected a JSON object, got {type(raw).__name__}")
    for key, kind in (("name", str), ("source", str), ("pairs", list)):
        if not isinstance(raw.get(key), kind):
            raise InputError(str(path), key, f"missing or not a {kind.__name__}")
    return raw


def read_table(path: Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """A parquet table of a run directory; unreadable files and missing columns are input errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path.parent), path.name, "missing: not a finished run directory")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable parquet is the user's file, not our bug
        raise InputError(str(path), "(file)", f"cannot be read as parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(str(path), ", ".join(missing), "no such column")
    return frame
