"""The real SmolLM2 model for the GGUF and end-to-end tests: the wheel the install step fetches (make install)."""

from __future__ import annotations

import os

import pytest

from harness.models import gguf
from harness.models.registry import load_registry

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_entry():
    """The registry entry, its GGUF converted once for the session (the session's own cache: tests/conftest.py).

    Without the wheel the tests are skipped with the reason, except in CI, where the install step must have fetched
    it (a skip there would hide a broken install step).
    """
    entry = load_registry().by_name()[SMOLLM2]
    try:
        gguf.materialize(entry.source, entry.revision)
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must fetch the SmolLM2 wheel in its install step: {exc}")
        pytest.skip(f"SmolLM2 wheel absent (not CI): {exc}")
    return entry
