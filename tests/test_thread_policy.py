"""The one-thread determinism policy lives below the CLI (harness.core.threads.thread_policy): `run`, `gate`,
`geometry`, `stretch`, `floor` and their Python entry points compute with the same torch thread count, record it as
the manifest's ``device.torch_threads``, and give the caller's count back afterwards."""

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.core.threads import torch_threads
from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU policy (one thread)")

PAIRS = [{"id": "p", "category": "punctuation", "prompt_a": "Reverse the word apple.", "prompt_b": "Reverse the word apple!"}]


@pytest.fixture()
def ladder_path(tmp_path) -> Path:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS), encoding="utf-8")
    return path


class Seen(Exception):
    """Raised by the recording loader once it has read the thread count (the model then fails, quickly)."""


def recording_loader(seen: list[int]):
    def load(entry, variant, *args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Seen("thread count recorded")
    return load


def _entry_points(ladder, out: Path, loader, threads):
    from harness.geometry.study import GeometryConfig, run_geometry
    from harness.run.pipeline import RunConfig, run
    from harness.stretch_study.floor import FloorConfig, run_floor
    from harness.stretch_study.stretch import StretchConfig, run_stretch

    models = tuple(resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY)))
    return {
        "run": lambda: run(RunConfig(models=models, ladder=ladder, out=out / "run", lengths=(4,), progress=False,
                                     loader=loader, threads=threads)),
        "geometry": lambda: run_geometry(GeometryConfig(models=models, ladder=ladder, out=out / "geometry", loader=loader,
                                                        threads=threads)),
        "stretch": lambda: run_stretch(StretchConfig(models=models, ladder=ladder, out=out / "stretch", loader=loader,
                                                     threads=threads)),
        "floor": lambda: run_floor(FloorConfig(models=models, ladder=ladder, out=out / "floor", variants=("int8",),
                                               loader=loader, threads=threads)),
    }


@pytest.mark.parametrize("threads, expected", [(None, 1), (2, 2)])
def test_python_entry_points_apply_the_policy_and_restore_the_callers_count(ladder_path, tmp_path, threads, expected):
    ladder = load_ladder(ladder_path)
    for name in ("run", "geometry", "stretch", "floor"):
        seen: list[int] = []
        call = _entry_points(ladder, tmp_path / name, recording_loader(seen), threads)[name]
        with torch_threads(3):  # a caller's own setting, neither the policy's nor the flag's
            result = call()
            assert torch.get_num_threads() == 3, name
        assert result.exit_code == 3, name  # the loader failed the model, on purpose
        assert seen and set(seen) == {expected}, (name, seen)
        manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["device"]["torch_threads"] == expected, name


def test_the_cli_and_the_library_record_the_same_count(ladder_path, tmp_path):
    from harness.stretch_study.stretch import StretchConfig, run_stretch

    common = ["--models", "tiny-chat", "--ladder", str(ladder_path), "--stretch-prompts", "0", "--max-new-tokens", "1"]
    models = tuple(resolve_models("tiny-chat", load_registry(DEFAULT_REGISTRY)))
    with torch_threads(3):
        assert main(["stretch", *common, "--out", str(tmp_path / "cli")]) == 0
        api = run_stretch(StretchConfig(models=models, ladder=load_ladder(ladder_path), out=tmp_path / "api",
                                        stretch_prompts=0, max_new_tokens=1))
        assert torch.get_num_threads() == 3
    (cli_dir,) = (tmp_path / "cli").iterdir()
    cli_threads = json.loads((cli_dir / "manifest.json").read_text())["device"]["torch_threads"]
    api_threads = json.loads((api.run_dir / "manifest.json").read_text())["device"]["torch_threads"]
    assert cli_threads == api_threads == 1


def test_a_bad_count_is_refused_before_any_directory_exists(ladder_path, tmp_path, capsys):
    for command in ("run", "geometry", "stretch", "floor"):
        out = tmp_path / command
        assert main([command, "--models", "tiny-chat", "--ladder", str(ladder_path), "--threads", "0", "--out", str(out)]) == 2
        assert "--threads" in capsys.readouterr().err
        assert not out.exists() or not any(out.iterdir()), command
