"""Hostile and broken inputs a nightly job meets (issue 17): each is exit 2 (or 4) with one line, no traceback.

Every fixture builds its hostile file in a temporary directory; nothing large is committed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from harness.cli import main
from tests.conftest import demo_ladder, write

LADDER = demo_ladder("faults", ["trailing_space"])


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    assert "Traceback" not in err
    return err


def _nothing_left(out) -> bool:
    return not out.exists() or not any(out.iterdir())


def _alias_bomb(path, levels: int = 9, width: int = 10):
    """A ~1 kB ladder whose aliases expand to width**levels strings (1e9 here)."""
    lines = ["ladder: bomb", "l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    lines.append(f"prompts:\n  - {{id: a, text: hi, curated: {{synonym: *l{levels}}}}}")
    return write(path, "\n".join(lines) + "\n")


def test_yaml_alias_expansion_is_bounded(tmp_path, capsys):
    # Defect 2: before, 60 s and 5.8 GB without output. The size check walks the node graph, not the expansion.
    bomb = _alias_bomb(tmp_path / "bomb.yaml")
    assert bomb.stat().st_size < 2000
    rc = main(["ladder", "show", str(bomb)])
    err = _err(capsys)
    assert rc == 2 and f"{bomb}: (aliases): expands to more than 1000000 values" in err
    # Small, honest aliases are still fine.
    ok = write(tmp_path / "ok.yaml", "ladder: ok\nprompts:\n  - {id: a, topic: &t demo, text: Reverse the word apple.}\n"
                                    "  - {id: b, topic: *t, text: 'What is 7 plus 5?'}\n")
    assert main(["ladder", "show", str(ok)]) == 0


@pytest.mark.parametrize("suffix, body", [
    (".yaml", "ladder: x\nprompts: " + "[" * 3000 + "]" * 3000 + "\n"),
    (".json", "[" * 50000 + "]" * 50000),
    (".yaml", "ladder: x\nprompts: " + "[" * 70 + "]" * 70 + "\n"),  # under Python's recursion limit, over ours
])
def test_deep_nesting_is_exit_2(tmp_path, capsys, suffix, body):
    # Defect 3: a RecursionError traceback, exit 1, before.
    path = write(tmp_path / f"deep{suffix}", body)
    rc = main(["run", "--ladder", str(path), "--models", "tiny-chat", "--out", str(tmp_path / "r")])
    err = _err(capsys)
    assert rc == 2 and f"{path}: (nesting): nested deeper than 64 levels" in err
    assert _nothing_left(tmp_path / "r")


def test_device_fifo_and_oversize_inputs_are_refused(tmp_path, capsys, monkeypatch):
    # Defect 11: a prompts file that is a character device was read until memory ran out.
    endless = tmp_path / "prompts.txt"
    endless.symlink_to("/dev/zero")
    rc = main(["ladder", "build", "--prompts", str(endless)])
    assert rc == 2 and f"{endless}: file: is not a regular file" in _err(capsys)
    fifo = tmp_path / "ladder.yaml"
    os.mkfifo(fifo)  # opening it would block forever: it is never opened
    rc = main(["run", "--ladder", str(fifo), "--models", "tiny-chat", "--out", str(tmp_path / "r")])
    assert rc == 2 and f"{fifo}: file: is not a regular file" in _err(capsys)
    from harness.core import yaml_strict

    monkeypatch.setattr(yaml_strict, "MAX_INPUT_BYTES", 1000)
    big = write(tmp_path / "big.txt", "Reverse the word apple.\n" * 100)
    rc = main(["ladder", "build", "--prompts", str(big)])
    assert rc == 2 and f"{big}: file: is 2400 bytes, more than the 1000-byte limit" in _err(capsys)


def test_cache_naming_a_file_is_exit_2_before_any_run_dir(tmp_path, capsys):
    # Defect 4: NotADirectoryError traceback, exit 1, and a crashed run directory.
    cache = write(tmp_path / "cache", "not a directory")
    out = tmp_path / "r"
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(write(tmp_path / "l.yaml", LADDER)), "--lengths", "8",
               "--cache", str(cache), "--out", str(out), "--no-progress"])
    assert rc == 2 and f"{cache}: --cache: is a file, expected a directory" in _err(capsys)
    assert _nothing_left(out)


def test_ray_executor_without_ray_is_environment(tmp_path, capsys, monkeypatch):
    # Weak: a traceback and exit 1 before; a missing optional dependency is the environment (4).
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as on a machine without it
    out = tmp_path / "r"
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(write(tmp_path / "l.yaml", LADDER)), "--lengths", "8",
               "--executor", "ray", "--out", str(out), "--no-progress", "--no-cache"])
    err = _err(capsys)
    assert rc == 4 and "--executor ray: Ray is not installed" in err
    assert _nothing_left(out)


def test_duplicate_prompts_are_never_silently_doubled(tmp_path, capsys):
    # Weak: duplicate lines doubled every pair's weight and lost the positive control, without a word.
    txt = write(tmp_path / "p.txt", "Reverse the word apple.\nWhat is 7 plus 5?\nReverse the word apple.\n")
    rc = main(["ladder", "build", "--prompts", str(txt), "--out", str(tmp_path / "l.yaml")])
    captured = capsys.readouterr()
    assert rc == 0 and "1 duplicate prompt(s) skipped (same text as an earlier prompt: p003 = p001)" in captured.err
    assert "2 prompts" in captured.out
    from harness.ladder.prompts_file import ladder_from_prompts

    ladder = ladder_from_prompts(txt)
    assert [p.id for p in ladder.prompts] == ["p001", "p002"]
    assert {p.prompt_id for p in ladder.pairs if p.rung == "positive_control"} == {"p001", "p002"}
    # A ladder file names its prompts: a repeat there is an authoring error.
    dup = write(tmp_path / "dup.yaml", LADDER + '  - {id: again, text: "What is 7 plus 5?"}\n')
    rc = main(["ladder", "show", str(dup)])
    assert rc == 2 and f"{dup}: prompts[2].text: duplicate prompt: same text as prompts[1] (id 'add')" in _err(capsys)
    pairs = write(tmp_path / "pairs.json", json.dumps([
        {"id": "a", "category": "synonym", "prompt_a": "Big dog.", "prompt_b": "Large dog."},
        {"id": "b", "category": "synonym", "prompt_a": "Big dog.", "prompt_b": "Large dog."}]))
    rc = main(["ladder", "show", str(pairs)])
    assert rc == 2 and f"{pairs}: [1].id: duplicate pair: same category and prompts as 'a'" in _err(capsys)


def test_registry_source_outside_a_model_dir_is_refused_before_hashing(tmp_path, capsys, monkeypatch):
    # Weak: `source: ../../etc` was hashed file by file; a file path got "does not exist" although it exists.
    from harness.core import hashing

    hashed = []
    real = hashing.hash_files
    monkeypatch.setattr(hashing, "hash_files", lambda root, files: hashed.append(root) or real(root, files))
    elsewhere = tmp_path / "etc"
    write(elsewhere / "passwd", "root:x:0:0\n")
    a_file = write(tmp_path / "weights.bin", "x")
    reg = write(tmp_path / "reg.yaml", f"models:\n  - name: etc\n    source: {elsewhere}\n"
                                       f"  - name: file\n    source: {a_file}\n")
    rc = main(["registry", "pin", "--registry", str(reg), "--names", "etc", "--local-only"])
    assert rc == 2 and f"{reg}: etc.source: {elsewhere} is not a model directory (no config.json)" in _err(capsys)
    ladder = write(tmp_path / "l.yaml", LADDER)
    rc = main(["run", "--registry", str(reg), "--models", "etc,file", "--ladder", str(ladder), "--lengths", "8",
               "--out", str(tmp_path / "r"), "--no-progress", "--no-cache"])
    assert rc == 3
    (run_dir,) = (tmp_path / "r").iterdir()
    errors = {m["name"]: m["error"] for m in json.loads((run_dir / "manifest.json").read_text())["models"]}
    assert errors["etc"].endswith(f"{elsewhere} is not a model directory (no config.json)")
    assert errors["file"].endswith(f"{a_file} is a file, not a model directory") and "does not exist" not in errors["file"]
    assert not any(str(root).startswith(str(elsewhere)) for root in hashed)  # nothing in it was hashed
    rc = main(["run", "--models", str(a_file), "--out", str(tmp_path / "r2")])
    assert rc == 2 and "is a file, not a model directory" in _err(capsys)


def test_model_dir_without_tokenizer_says_so_in_full(tmp_path, tiny_chat_dir, capsys):
    # Weak: the message was cut off after "from one of:".
    model = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_chat_dir, model)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / f).unlink(missing_ok=True)
    rc = main(["run", "--models", str(model), "--ladder", str(write(tmp_path / "l.yaml", LADDER)), "--lengths", "8",
               "--out", str(tmp_path / "r"), "--no-progress", "--no-cache"])
    assert rc == 3
    (run_dir,) = (tmp_path / "r").iterdir()
    err = json.loads((run_dir / "manifest.json").read_text())["models"][0]["error"]
    assert err == (f"ValueError: {model}: no tokenizer files (expected tokenizer.json, tokenizer.model, "
                   "or vocab.json with merges.txt, next to config.json)")


def test_multi_line_library_errors_are_kept_whole():
    from harness.errors import error_line

    exc = ValueError("Couldn't instantiate the backend tokenizer from one of: \n(1) a file, \n(2) a slow tokenizer")
    assert error_line(exc) == ("ValueError: Couldn't instantiate the backend tokenizer from one of: (1) a file, "
                               "(2) a slow tokenizer")
