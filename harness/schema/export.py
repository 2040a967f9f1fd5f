"""``python -m harness.schema.export``: the JSON Schema of what a run saves, into docs/schema/.

The files are committed; tests/schema/test_export.py fails when they differ from what the models give
(regenerate with this command after changing a model). ``--check`` only compares (exit 1 when stale).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from harness.schema.cell import CellRecord
from harness.schema.manifest import Manifest
from harness.schema.summary import Summary

EXPORTS: dict[str, type[BaseModel]] = {
    "manifest.schema.json": Manifest,
    "summary.schema.json": Summary,
    "cell.schema.json": CellRecord,
}
"""File name under docs/schema/ -> the model it documents."""

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"
"""docs/schema/ of the checkout this package is imported from."""


def schema_texts() -> dict[str, str]:
    """Each exported file's text: the model's JSON Schema, keys sorted, so the text changes only with the model."""
    return {name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
            for name, model in EXPORTS.items()}


def stale_files(directory: Path = DEFAULT_DIR) -> list[str]:
    """The exported files missing from ``directory`` or different from what the models give."""
    out = []
    for name, text in schema_texts().items():
        path = Path(directory) / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def write_schemas(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in schema_texts().items():
        (directory / name).write_text(text, encoding="utf-8")
        paths.append(directory / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.schema.export", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="directory (default: docs/schema/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / name}: stale: run python -m harness.schema.export", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
