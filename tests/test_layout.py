"""Each package keeps its records in records.py: frozen dataclasses with a docstring under every field.

A package's validated configuration stays with its validation in config.py, documented the same way."""

import ast
from pathlib import Path

from tests.conftest import ROOT

RECORDS = sorted((ROOT / "harness").rglob("records.py"))
CONFIGS = sorted((ROOT / "harness").rglob("config.py"))


def _dataclasses(tree: ast.Module) -> list[ast.ClassDef]:
    return [c for c in tree.body if isinstance(c, ast.ClassDef)
            and any(ast.unparse(d).startswith("dataclass") for d in c.decorator_list)]


def _is_docstring(node: ast.stmt | None) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def undocumented_fields(source: str) -> list[str]:
    """``Class.field`` of every dataclass field not followed by a string statement (its docstring)."""
    out = []
    for c in _dataclasses(ast.parse(source)):
        for i, stmt in enumerate(c.body):
            if isinstance(stmt, ast.AnnAssign):
                following = c.body[i + 1] if i + 1 < len(c.body) else None
                if not _is_docstring(following) or not following.value.value.strip():
                    out.append(f"{c.name}.{ast.unparse(stmt.target)}")
    return out


def unfrozen(source: str) -> list[str]:
    return [c.name for c in _dataclasses(ast.parse(source))
            if not any(isinstance(d, ast.Call) and any(k.arg == "frozen" and getattr(k.value, "value", None) is True
                                                       for k in d.keywords) for d in c.decorator_list)]


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_the_stages_have_records_modules():
    have = {p.parent.name for p in RECORDS}
    assert {"ladder", "models", "audit", "decode", "score", "summary", "report", "run", "gate", "geometry",
            "stability", "stretch", "stretch_study"} <= have, sorted(have)


def test_every_field_of_every_record_and_config_has_a_docstring():
    assert CONFIGS, "no config.py found"
    missing = {_rel(p): undocumented_fields(p.read_text(encoding="utf-8")) for p in RECORDS + CONFIGS}
    assert not {k: v for k, v in missing.items() if v}


def test_every_record_and_config_is_frozen():
    found = {_rel(p): unfrozen(p.read_text(encoding="utf-8")) for p in RECORDS + CONFIGS}
    assert not {k: v for k, v in found.items() if v}


def test_the_checks_catch_a_missing_docstring_and_a_mutable_record():
    source = (
        "from dataclasses import dataclass\n\n"
        "@dataclass(frozen=True)\nclass A:\n    x: int\n    '''Documented.'''\n    y: float = 0.0\n\n"
        "@dataclass\nclass B:\n    z: str\n    '''Documented.'''\n    w: int\n    '''   '''\n"
    )
    assert undocumented_fields(source) == ["A.y", "B.w"]
    assert unfrozen(source) == ["B"]
