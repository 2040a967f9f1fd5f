"""The command line behaves as people expect: --version, python -m harness, defaults in help, one-line errors
without internal names, choices checked, a multi-line prompt file refused; the shipped files found outside
the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.cli import build_parser, main
from tests.conftest import ROOT, write


def _cli(*argv, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_version_and_python_dash_m(tmp_path):
    res = _cli("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"stabprobe {harness.__version__}"
    res = _cli("--help", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m harness ")
    for cmd in ("run", "show", "report", "compare", "ladder", "registry"):
        assert f"\n    {cmd}" in res.stdout, cmd


def test_help_shows_defaults_and_explains_positionals():
    p = build_parser()
    run = p._subparsers._group_actions[0].choices["run"].format_help()
    for text in ("(default: tiny-chat,tiny-think,tiny-base)", "(default: 64,512)", "(default: 48)"):
        assert text in " ".join(run.split()), text
    for name in ("report", "compare", "show", "merge", "plan"):
        h = p._subparsers._group_actions[0].choices[name].format_help()
        positional = h.split("positional arguments:", 1)[1].split("options:", 1)[0]
        assert all(len(line.split()) > 1 for line in positional.strip().splitlines() if line.startswith("  ") and
                   not line.startswith("    ")), h
    assert "(default: None)" not in run and "(default: False)" not in run


def test_errors_are_one_line_without_internal_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["registry"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == "stabprobe registry: error: the following arguments are required: {list,pin}"
    with pytest.raises(SystemExit) as e:
        main(["nonsense"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("stabprobe: error: argument COMMAND: invalid")
    assert "stabprobe: error: stabprobe" not in err and "_command" not in err


def test_ladder_show_checks_the_rung(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ladder", "show", str(ROOT / "ladders" / "default.yaml"), "--rung", "nonsense"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "invalid choice: 'nonsense'" in err and err.count("\n") == 0
    assert main(["ladder", "show", str(ROOT / "ladders" / "default.yaml"), "--rung", "punctuation"]) == 0


def test_ladder_build_refuses_a_multi_line_prompt_in_a_txt(tmp_path, capsys):
    mc = write(tmp_path / "mc.txt", "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\n")
    assert main(["ladder", "build", "--prompts", str(mc)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stabprobe: error: {mc}: line 2: 'A. Mars' continues a prompt") and err.count("\n") == 0
    # One line that merely starts like an option is a prompt; so is a list of them in JSON.
    ok = write(tmp_path / "ok.txt", "A. Lincoln was a president. Who followed him?\nWhat is 2 plus 2?\n")
    assert main(["ladder", "build", "--prompts", str(ok), "--edit-kinds", "casing"]) == 0


def test_shipped_files_are_found_outside_the_checkout(tmp_path):
    """setup.py's build_py copies ladders/, models/ and the registry into the built package; there the resolver
    finds them (what a non-editable `pip install .` relies on)."""
    build = tmp_path / "build"
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = build / "harness" / "_data"
    for name in ("model_registry.yaml", "ladders/default.yaml", "ladders/synonyms.yaml", "models/tiny-chat/config.json"):
        assert (data / name).is_file(), name
    assert (build / "harness" / "report" / "assets" / "report.js").is_file()
    code = ("from harness.core.resources import data_root; from harness.models.registry import DEFAULT_REGISTRY, "
            "load_registry; print(data_root()); print(len(load_registry(DEFAULT_REGISTRY).models))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(build)})
    assert res.returncode == 0, res.stderr[-2000:]
    root, n = res.stdout.split()
    assert Path(root) == data and int(n) > 3


def test_library_warnings_are_counted_and_each_shown_once(capsys):
    import logging
    import warnings

    from harness.core.log import configure, report_warnings

    tally = configure(0)
    logging.getLogger("harness").setLevel(logging.INFO)  # as on a terminal (pytest's stderr is not one)
    try:
        for _ in range(3):
            warnings.warn_explicit("old API", FutureWarning, "/x/site-packages/somelib/mod.py", 7, registry={})
        warnings.warn_explicit("other", UserWarning, "/x/site-packages/otherlib/a.py", 1, registry={})
    finally:
        report_warnings(tally)
        logging.getLogger("harness").handlers.clear()
    err = capsys.readouterr().err
    assert "4 warning(s) from libraries, 2 distinct, each shown once:" in err
    assert err.count("old API") == 1 and "3× somelib: FutureWarning: old API" in err
    assert "1× otherlib: UserWarning: other" in err


def test_stderr_keeps_one_line_errors_when_it_is_not_a_terminal(tmp_path, capsys):
    """Piped or in CI, phases are not logged unless -v: a failing command's stderr is its one error line."""
    bad = write(tmp_path / "l.yaml", "ladder: x\nprompts:\n  - id: a\n    text: hi\n    rung: nope\n")
    assert main(["run", "--models", "tiny-chat", "--ladder", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
