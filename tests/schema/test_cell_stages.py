"""run_cell is stage functions over a CellContext, none over ~60 lines."""

import ast

from tests.conftest import ROOT


def test_no_function_of_the_cell_module_is_over_60_lines():
    tree = ast.parse((ROOT / "harness" / "run" / "cell.py").read_text(encoding="utf-8"))
    long = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 60}
    assert not long
