"""docs/schema/ holds the JSON Schema the models give today (regenerate: python -m harness.schema.export)."""

import json

from harness.schema.export import DEFAULT_DIR, EXPORTS, main, stale_files
from tests.conftest import ROOT


def test_the_committed_json_schema_is_current():
    assert DEFAULT_DIR == ROOT / "docs" / "schema"
    assert stale_files() == [], "stale docs/schema/: run `python -m harness.schema.export` and commit the files"


def test_a_stale_file_is_found_and_check_exits_1(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPORTS)
    assert main(["--out", str(tmp_path), "--check"]) == 0
    doc = json.loads((tmp_path / "manifest.schema.json").read_text())
    del doc["properties"]["status"]
    (tmp_path / "manifest.schema.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--check"]) == 1
    assert "manifest.schema.json: stale" in capsys.readouterr().err


def test_every_field_is_described():
    """A field without a description would be an undocumented key in docs/schema/."""
    missing = []

    def walk(name, schema):
        for model in [schema, *schema.get("$defs", {}).values()]:
            for field, spec in model.get("properties", {}).items():
                if not spec.get("description"):
                    missing.append(f"{name}: {model.get('title')}.{field}")

    for name, model in EXPORTS.items():
        walk(name, model.model_json_schema())
    assert not missing
