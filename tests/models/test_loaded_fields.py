"""LoadedModel declares everything the decode stage keeps on it; nothing is read back through getattr defaults."""

import dataclasses
import re

from harness.models.loading import LoadedModel, load_model
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from tests.conftest import ROOT


def test_decode_state_is_declared_with_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(LoadedModel)}
    for name in ("batching_used", "rows_unsupported", "linear_invariance", "head_check", "stability", "stability_status"):
        assert fields[name] is None, name


def test_stability_note_before_and_after_the_head_is_built():
    loaded = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"], lazy=True)
    assert loaded.stability_note == "from cache"  # nothing decoded: the weights were never needed
    _ = loaded.model
    assert loaded.stability_note == "n/a"
    assert loaded.stability_head() is not None and loaded.stability_note == "ok" == loaded.stability_status


def test_no_getattr_defaults_on_the_loaded_model():
    pattern = re.compile(r"getattr\((self|loaded)\s*,")
    hits = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("decode", "models") for p in (ROOT / "harness" / pkg).glob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits
