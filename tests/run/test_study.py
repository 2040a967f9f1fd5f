"""The study runner (harness.run.study) that geometry, stretch, floor and audit share: manifest states, the
per-model loop, the summary's JSON. No model is loaded: the measure functions are plain functions."""

import json

import pytest

from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.study import study_run


def _models():
    entry = resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY))[0]
    return [entry, entry.model_copy(update={"name": "second"}), entry.model_copy(update={"name": "third"})]


def _manifest(study) -> dict:
    return json.loads((study.run_dir / "manifest.json").read_text(encoding="utf-8"))


def test_a_failing_model_is_recorded_and_the_others_go_on(tmp_path):
    def measure(entry, record):
        if entry.name == "second":
            raise ValueError("no such weights\n(a library's second line)")
        record["info"] = {"n": 1}
        return entry.name.upper()

    with study_run("demo", tmp_path, ["stabprobe", "demo"], {"k": 1}, threads=1) as study:
        assert _manifest(study)["status"] == "running"
        outcomes = study.measure_models(_models(), measure, record_seconds=True)
        written = study.write_summary("demo_summary.json", {"x": float("nan"), "models": {
            o.entry.name: o.summary_entry(lambda r: {"upper": r}) for o in outcomes}})
    assert study.run_dir.name.endswith("-demo")
    assert [o.result for o in outcomes] == ["TINY-CHAT", None, "THIRD"]
    assert outcomes[1].error == "ValueError: no such weights (a library's second line)"  # errors.error_line
    m = _manifest(study)
    assert m["status"] == "complete" and m["command"] == "demo" and m["config"] == {"k": 1}
    assert m["device"]["torch_threads"] == 1
    assert [r["status"] for r in m["models"]] == ["ok", "failed", "ok"]
    assert list(m["models"][0]) == ["name", "source", "requested_revision", "info", "status", "seconds"]
    assert "ValueError" in m["models"][1]["traceback"]
    assert study.exit_code == 3
    assert written == {"x": None, "models": {"tiny-chat": {"status": "ok", "upper": "TINY-CHAT"},
                                             "second": {"status": "failed", "error": outcomes[1].error},
                                             "third": {"status": "ok", "upper": "THIRD"}}}
    assert json.loads((study.run_dir / "demo_summary.json").read_text())["x"] is None


@pytest.mark.parametrize("exc, status", [(RuntimeError("disk full"), "crashed"), (KeyboardInterrupt(), "interrupted")])
def test_an_escaping_exception_leaves_the_manifest_saying_so(tmp_path, exc, status):
    with pytest.raises(type(exc)), study_run("demo", tmp_path, ["x"], {}) as study:
        raise exc
    m = _manifest(study)
    assert m["status"] == status and m["error"].startswith(type(exc).__name__)


def test_the_config_may_be_built_inside_the_run_directory(tmp_path):
    def config(run_dir):
        (run_dir / "controls").mkdir()
        return {"controls": str(run_dir / "controls")}

    with study_run("demo", tmp_path, ["x"], config, libraries={"extra-lib": "1.0"}) as study:
        pass
    m = _manifest(study)
    assert m["config"]["controls"] == str(study.run_dir / "controls") and m["libraries"]["extra-lib"] == "1.0"
    assert study.exit_code == 0
