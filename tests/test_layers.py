"""The layers contract in pyproject.toml holds, and it does catch an upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH and cwd pin the analysed `harness` to `root` (not an editable install elsewhere).
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )


def test_layers_contract_is_kept():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    target = tmp_path / "harness" / "score" / "embedder.py"
    target.write_text(target.read_text(encoding="utf-8") + "\nfrom harness.report import html  # upward\n", encoding="utf-8")
    done = _lint(tmp_path)
    assert done.returncode == 1
    assert "harness.score is not allowed to import harness.report" in done.stdout
    assert "harness.score.embedder -> harness.report.html" in done.stdout
