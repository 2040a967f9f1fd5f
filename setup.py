"""Only the optional C extension lives here; all other metadata is in pyproject.toml.

``optional=True``: without a compiler the install still succeeds and
``harness.score.metrics.edit_distance`` falls back to its pure-Python trajectory.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "harness.score.metrics._levtraj",
            ["harness/score/metrics/_levtraj.c"],
            optional=True,
            extra_compile_args=["-O3"],
        )
    ]
)
