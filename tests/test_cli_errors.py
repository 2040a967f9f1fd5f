"""Bad input: exit code 2, one line naming the file and field, nothing left behind."""

import pytest

from harness.cli import main
from tests.conftest import write


def _run(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize(
    "registry, expect",
    [
        ("models:\n  - name: tiny-chat\n    source: ./x\n    dtype: fp8\n", "models[0].dtype"),
        ("models:\n  - name: a\n    source: ./x\n    source: ./y\n", "source: duplicate key"),
        ("models:\n  - name: a\n    source: ./x\n    wat: 1\n", "models[0].wat: unknown key"),
    ],
)
def test_bad_registry(tmp_path, capsys, registry, expect):
    reg = write(tmp_path / "reg.yaml", registry)
    out = tmp_path / "runs"
    rc, err = _run(capsys, "run", "--registry", str(reg), "--models", "a", "--out", str(out))
    assert rc == 2
    assert err.count("\n") == 0 and str(reg) in err and expect in err
    assert not out.exists() or not any(out.iterdir())


def test_bad_ladder_and_unknown_model(tmp_path, capsys):
    ladder = write(tmp_path / "l.yaml", "ladder: x\nprompts:\n  - id: a\n    text: hi\n    rung: nope\n")
    out = tmp_path / "runs"
    rc, err = _run(capsys, "run", "--models", "tiny-chat", "--ladder", str(ladder), "--out", str(out))
    assert rc == 2 and f"{ladder}: prompts[0].rung: unknown key" in err
    rc, err = _run(capsys, "run", "--models", "nope", "--out", str(out))
    assert rc == 2 and "--models: nope" in err
    assert not out.exists() or not any(out.iterdir())


def test_unpinned_hub_model_refused(tmp_path, capsys):
    reg = write(tmp_path / "reg.yaml", "models:\n  - name: hub\n    source: owner/model\n")
    rc, err = _run(capsys, "run", "--registry", str(reg), "--models", "hub", "--out", str(tmp_path / "r"))
    assert rc == 2 and "hub.revision: hub model is not pinned" in err and "--allow-unpinned" in err


def test_bad_flags(tmp_path, capsys):
    rc, err = _run(capsys, "run", "--lengths", "0,x", "--out", str(tmp_path))
    assert rc == 2 and err.startswith("stabprobe: error: --lengths")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--bogus"])  # argparse's own errors: same one-line form, exit 2
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0 and "--bogus" in err


def test_registry_pin_without_hub_fails_loudly(tmp_path, capsys, monkeypatch):
    # The hub is unreachable from this machine; pin must say so (exit 4), not leave entries silently unpinned.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = write(tmp_path / "reg.yaml", "models:\n  - name: hub\n    source: owner/model\n")
    rc, err = _run(capsys, "registry", "pin", "--registry", str(reg))
    assert rc == 4 and "cannot resolve the hub revision of owner/model" in err


REG_OK = "models:\n  - name: m\n    source: ./m\n"


@pytest.mark.parametrize(
    "kind, name, content, expect",
    [
        ("registry", "reg.yaml", "models:\n  - name: m\n    source: ./m\n    colour: red\n", "models[0].colour: unknown key"),
        ("registry", "reg.yaml", "models:\n  - name: m\n    name: n\n    source: ./m\n", "name: duplicate key at line 3"),
        ("registry", "reg.yaml", "models:\n  - name: m\n    source: ./m\n    dtype: int3\n", "models[0].dtype"),
        ("registry", "reg.yaml", "models:\n  - name: m\n", "models[0].source: missing (required)"),
        ("ladder", "l.yaml", "ladder: x\nprompts: [\n", "invalid YAML"),
        ("ladder", "l.json", "[{", "invalid JSON"),
        ("ladder", "l.yaml", b"ladder: x\nprompts:\n  - id: a\n    text: \xff\n", "not valid UTF-8"),
        ("ladder", "l.yaml", "ladder: x\nprompts:\n  - id: a\n    text: '  '\n", "prompts[0].text: empty prompt"),
        ("ladder", "l.json", '[{"id": "a", "category": "sarcasm", "prompt_a": "x", "prompt_b": "y"}]', "[0].category: unknown category"),
        ("ladder", "l.yaml", "ladder: x\nprompts:\n  - id: a\n    text: hi\n    curated: {sarcasm: [x]}\n", "prompts[0].curated.sarcasm: unknown key"),
        ("ladder", "l.yaml", "ladder: x\nprompts:\n  - {id: a, text: hi}\n  - {id: a, text: yo}\n", "prompts[1].id: duplicate id"),
        ("ladder", "missing.yaml", None, "file: does not exist"),
    ],
)
def test_every_bad_input_is_exit_2_with_file_and_field(tmp_path, capsys, kind, name, content, expect):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "runs"
    args = ["run", "--out", str(out), "--no-progress"]
    if kind == "registry":
        args += ["--registry", str(path), "--models", "m"]
    else:
        args += ["--models", "tiny-chat", "--ladder", str(path)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"stabprobe: error: {path}") and expect in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_missing_model_directory_is_exit_2(tmp_path, capsys):
    rc = main(["run", "--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "neither a registry name nor an existing directory" in err
