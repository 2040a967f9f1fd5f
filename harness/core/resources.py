"""Where the project's shipped files live: the checkout, or the copy bundled into an installed package.

``ladders/``, ``models/`` (the demo checkpoints) and ``model_registry.yaml`` sit at the
repository root, where the tests, the README and ``make run`` name them. A ``pip install .``
(not editable) copies them into the package as ``harness/_data/`` (``setup.py``'s
``build_py``), because the installed ``harness`` has no repository root above it: without
the copy the defaults named ``…/site-packages/model_registry.yaml``, which does not exist.
The checkout wins when both exist, so an editable install reads the files being edited.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent
BUNDLED = _PACKAGE / "_data"
"""The copy ``setup.py`` writes into a built package (absent in a checkout)."""
SHIPPED = ("ladders", "models", "model_registry.yaml")
"""The repository-root paths that ship with the package."""


def data_root() -> Path:
    """The directory holding ``ladders/``, ``models/`` and ``model_registry.yaml``: the checkout when this
    module runs from one, else the package's bundled copy."""
    if (_CHECKOUT / "model_registry.yaml").is_file() and (_CHECKOUT / "ladders").is_dir():
        return _CHECKOUT
    return BUNDLED


def data_path(*parts: str) -> Path:
    """A shipped file, e.g. ``data_path("ladders", "default.yaml")``."""
    return data_root().joinpath(*parts)
