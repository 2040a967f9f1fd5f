"""What a run saves, through harness.schema: a real run's files round-trip; a misspelt key fails loudly;
an older schema version is one line and exit 2; the decode key comes from typed fields."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main
from harness.core import rundir
from harness.core.rundir_read import load_cell_record, load_manifest, load_summary, read_record
from harness.errors import InputError
from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.keys import cell_key
from harness.run.pipeline import RunConfig, run
from harness.schema import SCHEMA_VERSION, CellRecord, Manifest, Summary
from tests.conftest import demo_ladder, write

LADDER = demo_ladder("schema", ["trailing_space", "final_question"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    ladder = load_ladder(write(tmp / "schema.yaml", LADDER))
    models = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))
    result = run(RunConfig(models=tuple(models), ladder=ladder, out=tmp / "runs", lengths=(8,), progress=False))
    assert result.exit_code == 0
    return result.run_dir


def _text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)  # NaN written as today's writer writes it


@pytest.mark.parametrize("name, model", [(rundir.MANIFEST, Manifest), (rundir.SUMMARY, Summary),
                                         ("cells/tiny-chat--bf16/cell.json", CellRecord)])
def test_a_real_run_round_trips_through_its_model(run_dir, name, model):
    text = (run_dir / name).read_text(encoding="utf-8")
    raw = json.loads(text)
    assert raw["schema_version"] == SCHEMA_VERSION
    typed = model.model_validate_json(text)
    # The same keys in the same order and the same values: what is written is what the model holds.
    assert _text(typed.to_json_dict()) == _text(raw)


def test_the_readers_return_typed_records(run_dir):
    manifest = load_manifest(run_dir)
    assert manifest.status == "complete" and manifest.config.lengths == [8]
    cell = load_cell_record(run_dir / "cells" / "tiny-chat--bf16" / "cell.json")
    assert cell.status == "ok" and cell.timings_s.decode is not None
    assert manifest.models == [cell]
    summary = load_summary(run_dir)
    assert summary.determinism.verdict == manifest.determinism["verdict"]
    assert all(not math.isnan(c["emb_dist"]["mean"]) for c in summary.cells if c["rung"] == "identical")


def test_the_decode_key_is_rebuilt_from_the_typed_record(run_dir):
    manifest = load_manifest(run_dir)
    cell = manifest.models[0]
    key = cell_key(cell, manifest.config.lengths, manifest.config.decoder_version, manifest.config.batching,
                   manifest.libraries, manifest.device)
    assert key == cell.cache_key
    with pytest.raises(ValueError, match="engine_name and capture"):
        cell_key(cell.evolve(engine_name=None), [8], "x", "rows", manifest.libraries, manifest.device)


@pytest.mark.parametrize("name", [rundir.MANIFEST, rundir.SUMMARY, "cells/tiny-chat--bf16/cell.json"])
def test_a_misspelt_key_is_refused_naming_file_and_key(run_dir, tmp_path, name):
    raw = json.loads((run_dir / name).read_text(encoding="utf-8"))
    raw["statsu"] = "ok"  # a writer that misspelt the key, next to the real one
    path = write(tmp_path / "damaged.json", json.dumps(raw))
    model = {rundir.MANIFEST: Manifest, rundir.SUMMARY: Summary}.get(name, CellRecord)
    with pytest.raises(InputError) as err:
        read_record(path, model)
    assert err.value.one_line() == f"{path}: statsu: unknown key"


def test_a_misspelt_key_in_a_writer_fails_before_anything_is_written(run_dir):
    manifest = load_manifest(run_dir)
    with pytest.raises(ValueError, match="cache_entries_rejeted"):
        manifest.evolve(cache_entries_rejeted=1)
    with pytest.raises(ValueError, match="status"):
        manifest.evolve(status="finished")  # not one of the run statuses


def _copy(run_dir, tmp_path):
    import shutil

    return shutil.copytree(run_dir, tmp_path / "copy")


@pytest.mark.parametrize("version, found", [(1, "found 1"), (None, "found missing"), ("2", "found '2'")])
def test_an_older_run_directory_is_one_line_and_exit_2(run_dir, tmp_path, capsys, version, found):
    copy = _copy(run_dir, tmp_path)
    raw = json.loads((copy / rundir.MANIFEST).read_text())
    if version is None:
        del raw["schema_version"]
    else:
        raw["schema_version"] = version
    (copy / rundir.MANIFEST).write_text(json.dumps(raw))
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"stabprobe: error: {copy / rundir.MANIFEST}: schema_version: {found}, "
                          f"expected {SCHEMA_VERSION}"), err
    assert "older stabprobe" in err


def test_a_cell_record_of_an_older_run_is_refused_on_resume(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)
    raw = json.loads((copy / rundir.MANIFEST).read_text())
    (copy / rundir.MANIFEST).write_text(json.dumps({**raw, "status": "interrupted"}))
    cell = copy / "cells" / "tiny-chat--bf16" / "cell.json"
    old = json.loads(cell.read_text())
    del old["schema_version"]  # as written before the schema existed
    cell.write_text(json.dumps(old))
    assert main(["run", "--resume", str(copy), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"stabprobe: error: {cell}: schema_version: found missing, expected {SCHEMA_VERSION} "
                   "(written by an older stabprobe: rerun it with this version)"), err
