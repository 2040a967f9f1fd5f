"""Faults and trust: interrupts, concurrent runs, full disks, custom code."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.core import rundir
from harness.cli import main
from tests.conftest import ROOT, demo_ladder, write

LADDER = demo_ladder("rel", ["trailing_space", "parenthesized_word"])


# Four cells: the interrupt lands after the first, and three left keep it from racing the run's end on a loaded machine
# (with two cells the rest took about a second, and a CI run under load once finished before the signal was handled).
MODELS = "tiny-chat,tiny-think,tiny-base"


def _cmd(ladder, out, *extra):
    return [sys.executable, "-m", "harness.cli", "run", "--models", MODELS, "--ladder", str(ladder),
            "--lengths", "8", "--out", str(out), "--no-progress", *extra]


def _default_signals():
    # What a user's terminal gives the run: SIGINT and SIGTERM at their defaults and unblocked. A test process can
    # inherit them ignored or blocked (a background job of a non-interactive shell, a library that masked them), and
    # a child started that way would never see the interrupt this test sends.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _interrupted_run(tmp_path, sig):
    """A two-model run sent ``sig`` once its first cell is finished: (exit code, stderr, run directory, ladder)."""
    ladder = write(tmp_path / "l.yaml", LADDER)
    out = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(ladder, out, "--no-cache"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("*/cells/*/cell.json")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    (run_dir,) = out.iterdir()
    return proc.returncode, err, run_dir, ladder


def test_ctrl_c_keeps_finished_cells_and_resumes(tmp_path):
    code, err, run_dir, _ = _interrupted_run(tmp_path, signal.SIGINT)
    assert code == 130 and "--resume" in err, (code, err[-2000:])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert any(m["status"] == "ok" for m in manifest["models"])  # the finished cell is kept
    assert main(["run", "--resume", str(run_dir), "--no-progress", "--no-cache"]) == 0
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_sigterm_leaves_interrupted_and_resumes_to_the_same_tables(tmp_path):
    # What a CI timeout or a scheduler sends: the run must say "interrupted", keep its finished cells, and
    # --resume must give exactly the tables an uninterrupted run gives.
    code, err, run_dir, ladder = _interrupted_run(tmp_path, signal.SIGTERM)
    assert code == 143 and "--resume" in err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert main(["run", "--resume", str(run_dir), "--no-progress", "--no-cache"]) == 0
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    whole = tmp_path / "whole"
    assert main(["run", "--models", MODELS, "--ladder", str(ladder), "--lengths", "8", "--out",
                 str(whole), "--no-progress", "--no-cache"]) == 0
    (ref,) = whole.iterdir()
    for table, key in (("pairs.parquet", ["model", "variant", "pair_id", "length"]),
                       ("audit.parquet", ["model", "variant", "pair_id"])):
        a, b = (pd.read_parquet(d / table).sort_values(key).reset_index(drop=True) for d in (run_dir, ref))
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_two_runs_at_once_share_runs_dir_and_cache(tmp_path):
    ladder = write(tmp_path / "l.yaml", LADDER)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    procs = [subprocess.Popen(_cmd(ladder, out, "--cache", str(cache)), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    dirs = sorted(out.iterdir())
    assert len(dirs) == 2  # never the same directory
    a, b = (pd.read_parquet(d / "pairs.parquet").sort_values(["model", "variant", "pair_id", "length"]).reset_index(drop=True)
            for d in dirs)
    pd.testing.assert_frame_equal(a, b)
    from harness.core.checked import read_checked

    entries = list(cache.rglob("*.checked"))
    assert entries and all(read_checked(f) is not None for f in entries)  # every cache entry is whole
    assert not list(cache.rglob("*.tmp"))


def test_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch, capsys):
    ladder = write(tmp_path / "l.yaml", LADDER)
    real = rundir.atomic_write_bytes

    def failing(path, data):
        if str(path).endswith("pairs.parquet") and "cells" not in str(path):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data[: len(data) // 2])  # the disk fills halfway through
            tmp.unlink()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(rundir, "atomic_write_bytes", failing)
    rc = main(["run", "--models", "tiny-chat", "--ladder", str(ladder), "--lengths", "8", "--out", str(tmp_path / "r"),
               "--no-progress", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 4 and "No space left on device" in err and err.count("\n") == 1
    (run_dir,) = (tmp_path / "r").iterdir()
    assert not (run_dir / "pairs.parquet").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] != "complete"


def test_unwritable_output_directory(tmp_path, capsys):
    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("x")  # root ignores permissions; a file where a directory must be is refused for anyone
        out = target / "runs"
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    rc = main(["run", "--models", "tiny-chat", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and err.count("\n") == 1


def test_trust_remote_code_from_the_command_line_is_refused(capsys):
    rc = main(["run", "--models", "tiny-chat", "--trust-remote-code", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "tiny-chat.trust_remote_code" in err and "trust_remote_code: true" in err


def test_local_model_needing_custom_code_is_refused(tmp_path, tiny_chat_dir, capsys):
    custom = tmp_path / "custom-code-model"
    shutil.copytree(tiny_chat_dir, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (custom / "config.json").write_text(json.dumps(cfg))
    rc = main(["run", "--models", str(custom), "--ladder", str(write(tmp_path / "l.yaml", LADDER)), "--lengths", "8",
               "--out", str(tmp_path / "r"), "--no-progress", "--no-cache"])
    out = capsys.readouterr().out
    assert rc == 3 and "requires custom code" in out and "trust_remote_code: true" in out


def test_model_with_no_chat_template_is_refused_not_silently_raw(tmp_path, tiny_chat_dir):
    from harness.models.registry import load_registry

    model = tmp_path / "no-template"
    shutil.copytree(tiny_chat_dir, model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    reg = write(tmp_path / "reg.yaml", f"models:\n  - name: notemplate\n    source: {model}\n    chat_template: model\n")
    rc = main(["run", "--registry", str(reg), "--models", "notemplate", "--ladder", str(write(tmp_path / "l.yaml", LADDER)),
               "--lengths", "8", "--out", str(tmp_path / "r"), "--no-progress", "--no-cache"])
    assert rc == 3
    (run_dir,) = (tmp_path / "r").iterdir()
    rec = json.loads((run_dir / "manifest.json").read_text())["models"][0]
    assert rec["status"] == "failed" and "chat_template: none" in rec["error"]
    assert load_registry(reg).models[0].chat_template == "model"
