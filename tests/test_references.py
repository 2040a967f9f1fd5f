"""Docstrings, comments and the README name modules (``harness.run.cell``, ``decode/greedy.py``) as the place to
read next; when a module moves those names rot silently. This finds every such name and checks that it exists."""

import re
from pathlib import Path

from tests.conftest import ROOT

SOURCES = sorted((ROOT / "harness").rglob("*.py")) + [ROOT / "README.md"]

DOTTED = re.compile(r"\bharness(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PATH = re.compile(r"(?<![\w/.])((?:[a-z_]+/)+[a-z_0-9]+\.py)\b")

OUTSTANDING: set[str] = set()
"""Names known to be stale and not fixed yet (none): the test fails while one is listed and resolves."""


def _module_file(parts: list[str]) -> Path | None:
    p = ROOT.joinpath(*parts)
    for cand in (p.with_suffix(".py"), p / "__init__.py", p.with_suffix(".c")):  # .c: a compiled extension's source
        if cand.is_file():
            return cand
    return None


def dotted_exists(name: str) -> bool:
    """``harness.a.b[.attr]``: the longest module prefix exists and the first name after it is defined or imported
    there (a word of its source: a docstring may name a re-exported function)."""
    parts = name.split(".")
    if any(p.startswith("__") for p in parts):  # harness.__file__, harness.__version__
        return True
    for i in range(len(parts), 0, -1):
        f = _module_file(parts[:i])
        if f is not None:
            rest = parts[i:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", f.read_text(encoding="utf-8")) is not None
    return False


def path_exists(path: str) -> bool:
    """``x/y.py`` relative to the repository, to harness/ or to tests/ (the three ways the text abbreviates)."""
    return any((base / path).exists() for base in (ROOT, ROOT / "harness", ROOT / "tests"))


def dangling(files=SOURCES) -> set[str]:
    out = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        rel = f.relative_to(ROOT)
        out |= {f"{rel}: {m.group(0)}" for m in DOTTED.finditer(text) if not dotted_exists(m.group(0))}
        out |= {f"{rel}: {m.group(1)}" for m in PATH.finditer(text) if not path_exists(m.group(1))}
    return out


def test_every_module_a_docstring_or_the_readme_names_exists():
    found = dangling()
    assert found - OUTSTANDING == set(), "names of modules that do not exist (moved?): fix the text"
    assert OUTSTANDING - found == set(), "fixed: delete these from OUTSTANDING"


def test_the_check_finds_a_moved_module():
    f = ROOT / "harness" / "run" / "study.py"
    assert dotted_exists("harness.run.study.study_run") and dotted_exists("harness.core.threads")
    assert not dotted_exists("harness.run.traces") and not dotted_exists("harness.run.study.no_such_name")
    assert path_exists("run/study.py") and path_exists("ladder/test_ladder_properties.py")
    assert not path_exists("run/traces.py")
    assert f"{f.relative_to(ROOT)}: harness.run.study" not in dangling([f])
