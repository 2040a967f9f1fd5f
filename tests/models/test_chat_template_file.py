"""Registry `chat_template: file.jinja`, and a template that cannot render failing with where and why."""

import json
import shutil

import pytest

from harness.cli import main
from harness.core.hashing import sha256_text
from harness.models.loading import load_model
from harness.models.registry import load_registry
from harness.audit.render import render_prompt
from tests.conftest import write
from tests.run.test_pipeline import SMALL_LADDER

# The shape of the published Phi-4-mini-instruct template: it iterates `tools` whenever it is
# *defined*, and transformers passes tools=None, so one user message cannot render.
TOOLS_WHEN_DEFINED = """{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if tools is defined -%}
{%- for tool in tools -%}{{ tool | tojson }}{%- endfor -%}
{%- endif -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""

FIXED = TOOLS_WHEN_DEFINED.replace("{%- if tools is defined -%}", "{%- if tools -%}")


def test_a_template_that_raises_fails_the_model_with_line_and_source(tmp_path, tiny_chat_dir, capsys):
    broken = tmp_path / "tools-template-model"
    shutil.copytree(tiny_chat_dir, broken)
    (broken / "chat_template.jinja").write_text(TOOLS_WHEN_DEFINED)
    ladder = write(tmp_path / "small.yaml", SMALL_LADDER)
    rc = main(["run", "--models", f"tiny-chat,{broken}", "--ladder", str(ladder), "--lengths", "4",
               "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 3  # the other model finished
    (run_dir,) = (tmp_path / "runs").iterdir()
    rec = {m["name"]: m for m in json.loads((run_dir / "manifest.json").read_text())["models"]}
    assert rec["tiny-chat"]["status"] == "ok"
    err = rec["tools-template-model"]["error"]
    # before: "TypeError: 'NoneType' object is not iterable", with no word about the template
    assert err == ("chat template failed to render: TypeError: 'NoneType' object is not iterable "
                   "at template line 5 (template from tokenizer)")
    assert f"FAILED tools-template-model (bf16): {err}" in capsys.readouterr().out


def _registry(tmp_path, tiny_chat_dir, template_value: str):
    return write(tmp_path / "reg.yaml", f"models:\n  - name: fixed\n    source: {tiny_chat_dir}\n"
                                        f"    chat_template: {template_value}\n")


def test_registry_template_file_is_used_hashed_and_recorded(tmp_path, tiny_chat_dir):
    write(tmp_path / "templates" / "fixed.jinja", FIXED)
    entry = load_registry(_registry(tmp_path, tiny_chat_dir, "templates/fixed.jinja")).by_name()["fixed"]
    path = tmp_path / "templates" / "fixed.jinja"
    assert entry.chat_template == str(path.resolve())  # relative to the registry file, not the cwd
    loaded = load_model(entry, lazy=True)
    assert loaded.info.chat_template_source == str(path.resolve())
    assert loaded.info.chat_template_sha256 == sha256_text(FIXED)
    assert loaded.info.chat_template_sha256 != sha256_text(loaded.tokenizer.chat_template)
    rendered = render_prompt(loaded.tokenizer, "Reverse the word apple.", loaded.policy)
    assert rendered.text == "<|im_start|>user\nReverse the word apple.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("value, expect", [
    ("missing.jinja", "missing.jinja: no such template file"),
    ("chatml", "expected 'model', 'none' or a path to a .jinja file"),
])
def test_bad_template_file_is_an_input_error(tmp_path, tiny_chat_dir, capsys, value, expect):
    reg = _registry(tmp_path, tiny_chat_dir, value)
    rc = main(["run", "--registry", str(reg), "--models", "fixed", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and str(reg) in err and "models[0].chat_template" in err and expect in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
