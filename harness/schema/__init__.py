"""The typed spine of what a run saves: one pydantic model per file, shared by every writer and reader.

``run_config`` (manifest ``config``), ``cell`` (``cells/*/cell.json`` and manifest ``models[]``),
``manifest`` (``manifest.json``) and ``summary`` (``summary.json``). Writers build or validate
through these models and write :meth:`~harness.schema.base.Record.to_json_dict`; readers load
through them (harness.core.rundir_read), so a misspelt or mistyped key fails loudly, naming the
file and the field. A file written by an older harness (``schema_version`` older or missing) is
refused with one line (harness.schema.base.check_schema_version). ``python -m
harness.schema.export`` writes the JSON Schema of the manifest and summary into docs/schema/.

This package imports nothing from the pipeline (only pydantic and harness.errors): every layer
above it, harness.core included, can read and write through it.
"""

from harness.schema.base import SCHEMA_VERSION, Record, check_schema_version
from harness.schema.cell import CellRecord
from harness.schema.manifest import Manifest
from harness.schema.run_config import RunConfigRecord
from harness.schema.summary import Summary

__all__ = ["SCHEMA_VERSION", "Record", "check_schema_version", "CellRecord", "Manifest", "RunConfigRecord", "Summary"]
