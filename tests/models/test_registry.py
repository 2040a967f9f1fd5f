"""Registry validation and --models resolution."""

import pytest

from harness.errors import InputError
from harness.models.registry import DEFAULT_REGISTRY, is_local_source, load_registry, resolve_models
from harness.models.pin import set_revision
from tests.conftest import write

GOOD = """models:
  - name: m1
    source: ./m1
    kind: instruct
  - name: hubby
    source: owner/model
    revision: null
"""


def test_shipped_registry_validates_and_has_the_panel():
    reg = load_registry(DEFAULT_REGISTRY)
    names = {m.name for m in reg.models}
    assert {"tiny-chat", "tiny-think", "tiny-base"} <= names
    assert len(reg.models) >= 3 + 21
    for m in reg.models:
        assert m.trust_remote_code is False
        if not m.is_local:
            assert "/" in m.source


@pytest.mark.parametrize(
    "text, field, message",
    [
        ("models:\n  - name: a\n    source: ./a\n    colour: red\n", "models[0].colour", "unknown key"),
        ("models:\n  - name: a\n    name: b\n    source: ./a\n", "name", "duplicate key at line 3"),
        ("models:\n  - name: a\n    source: ./a\n    dtype: bf8\n", "models[0].dtype", "bf8"),
        ("models:\n  - name: a\n", "models[0].source", "missing (required)"),
        ("models:\n  - name: a\n    source: ./a\n    revision: main\n", "models[0]", "40-hex"),
        ("models:\n  - name: a\n    source: ./a\n  - name: a\n    source: ./b\n", "models[1].name", "duplicate name"),
        ("models:\n  - name: a\n    source: ./a\n    template_date: 2026-13-01\n", "models[0].template_date", "month"),
        ("models:\n  - name: a\n    source: ./a\n    template_date: yesterday\n", "models[0].template_date",
         "YYYY-MM-DD"),
        ("models: [\n", "line", "invalid YAML"),
        ("extra: 1\nmodels: []\n", "extra", "unknown key"),
    ],
)
def test_bad_registries_name_file_and_field(tmp_path, text, field, message):
    path = write(tmp_path / "reg.yaml", text)
    with pytest.raises(InputError) as err:
        load_registry(path)
    line = err.value.one_line()
    assert line.startswith(str(path)) and field in line and message in line
    assert "\n" not in line


def test_local_sources_resolve_relative_to_the_registry(tmp_path):
    reg = load_registry(write(tmp_path / "sub" / "reg.yaml", GOOD))
    assert reg.by_name()["m1"].source == str((tmp_path / "sub" / "m1").resolve())


def test_unpinned_hub_model_is_refused_unless_allowed(tmp_path):
    reg = load_registry(write(tmp_path / "reg.yaml", GOOD))
    with pytest.raises(InputError, match="hubby.revision: hub model is not pinned"):
        resolve_models("hubby", reg)
    assert resolve_models("hubby", reg, allow_unpinned=True)[0].source == "owner/model"


def test_models_accepts_names_and_directories(tmp_path, tiny_chat_dir):
    reg = load_registry(DEFAULT_REGISTRY)
    entries = resolve_models(["tiny-think", str(tiny_chat_dir)], reg)
    assert entries[0].name == "tiny-think"
    assert entries[1].source == str(tiny_chat_dir.resolve()) and entries[1].revision.startswith("sha256:")
    with pytest.raises(InputError, match="neither a registry name nor an existing directory"):
        resolve_models("no-such-model", reg)
    with pytest.raises(InputError, match="not a model directory"):
        resolve_models(str(tmp_path), reg)


def test_hub_ids_and_paths_are_told_apart():
    assert not is_local_source("Qwen/Qwen3.5-0.8B")
    assert is_local_source("./models/tiny-chat") and is_local_source("/abs/dir") and is_local_source("a/b/c")


def test_pin_rewrites_only_the_revision_line():
    text = "models:\n  - name: a\n    source: x/y\n    revision: null  # pin me\n  - name: b\n    source: x/z\n"
    out = set_revision(text, "b", "f" * 40)
    assert out.splitlines()[:4] == text.splitlines()[:4]
    assert f'    revision: "{"f" * 40}"' in out.splitlines()
    out2 = set_revision(text, "a", "e" * 40)
    assert out2.splitlines()[3] == f'    revision: "{"e" * 40}"  # pin me'


def test_unquoted_dates_stay_text_and_template_date_defaults_to_frozen(tmp_path):
    from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE

    path = write(tmp_path / "reg.yaml",
                 "models:\n  - name: a\n    source: ./a\n    template_date: 2025-06-30\n  - name: b\n    source: ./b\n")
    a, b = load_registry(path).models
    assert a.template_date == "2025-06-30"
    assert b.template_date == DEFAULT_TEMPLATE_DATE
