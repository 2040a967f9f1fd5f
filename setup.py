"""The optional C extension and the shipped data files; all other metadata is in pyproject.toml.

``optional=True``: without a compiler the install still succeeds and
``harness.score.metrics.edit_distance`` falls back to its pure-Python trajectory.

``build_py`` copies the repository-root files a default run needs (``ladders/``, the demo
``models/``, ``model_registry.yaml``) into the built package as ``harness/_data/``, so a
non-editable ``pip install .`` runs ``stabprobe run`` outside the checkout
(``harness.core.resources`` finds them). They stay at the root in the repository, where
the tests and the README name them.
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("ladders", "models", "model_registry.yaml")  # harness.core.resources.SHIPPED


class BuildWithData(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        dest = Path(self.build_lib) / "harness" / "_data"
        for name in SHIPPED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, dest / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)


setup(
    cmdclass={"build_py": BuildWithData},
    ext_modules=[
        Extension(
            "harness.score.metrics._levtraj",
            ["harness/score/metrics/_levtraj.c"],
            optional=True,
            extra_compile_args=["-O3"],
        )
    ],
)
