"""`stabprobe gate`: exit 0 / 1 / 2 on a passing, a failing and a malformed config; JUnit and Markdown outputs.

Two real pipeline runs on the committed demo model tiny-chat (lengths [16], a
few edit kinds), shared by the tests of this module; the malformed configs
never reach the pipeline.
"""

from __future__ import annotations

import contextlib
import json
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import EnvironmentProblem
from harness.gate.run import append_step_summary, check_neighbourhood, junit_xml, run_gate
from harness.gate.records import GateCheck, ModelRun, PASS
from harness.gate.config import GateNeighbourhood, Thresholds, load_gate_config
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from tests.conftest import write

REGISTRY = DEFAULT_REGISTRY

PASSING = """\
models: [tiny-chat]
registry: {registry}
lengths: [16]
out: runs
neighbourhoods:
  - id: reverse
    prompt: "Reverse the word apple."
    rungs: [noop_format, punctuation]
    edit_kinds: [trailing_space, final_question]
    thresholds: {{max_mean_emb_dist: 1.0, max_flip_rate: 1.0}}
  - id: add
    pairs:
      - {{a: "What is 7 plus 5?", b: "What is 7 added to 5?", rung: synonym}}
    thresholds:
      max_mean_emb_dist: 2.0
      max_early_divergence_share: 1.0
      early_step: 4
      relative_to_noise_floor: true
"""

FAILING = """\
models: [tiny-chat, tiny-chat-tampered]
registry: reg.yaml
lengths: [16]
out: runs
junit: ci/gate.xml
neighbourhoods:
  - id: sum
    prompt: "What is 7 plus 5?"
    rungs: [punctuation, structural, positive_control]
    edit_kinds: [comma_inserted, parenthesized_word, newline_in_sentence, whitespace_run]
    # A different task makes sure something moves, whatever the demo model's training made robust.
    curated: {positive_control: ["Reverse the word apple."]}
    thresholds: {max_mean_emb_dist: 0.0}
  - id: add
    pairs:
      - {a: "What is 7 plus 5?", b: "What is 7 added to 5?", rung: synonym}
    thresholds: {max_mean_emb_dist: 2.0, relative_to_noise_floor: true}
"""


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _tampered_registry(path: Path) -> Path:
    """tiny-chat, and the same directory under a wrong content pin: a real load failure, no mock."""
    entry = load_registry(REGISTRY).by_name()["tiny-chat"].model_dump()
    bad = dict(entry, name="tiny-chat-tampered", revision="sha256:" + "0" * 64)
    path.write_text(yaml.safe_dump({"models": [entry, bad]}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate-pass")
    config = write(tmp / "gate.yaml", PASSING.format(registry=REGISTRY))
    step = write(tmp / "step-summary.md", "earlier step\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_STEP_SUMMARY", str(step))
        rc, out, err = _cli("gate", "--config", str(config), "--out", str(tmp / "cli-out"), "--no-progress")
    assert not (tmp / "runs").exists()  # --out overrides the config's `out`
    (run_dir,) = (tmp / "cli-out").iterdir()
    return rc, out, err, run_dir, step


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate-fail")
    _tampered_registry(tmp / "reg.yaml")
    config = write(tmp / "gate.yaml", FAILING)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GITHUB_STEP_SUMMARY", raising=False)
        return run_gate(config, argv=("stabprobe", "gate", "--config", str(config)), progress=False)


def test_passing_config_exits_0(passing):
    rc, out, err, run_dir, _ = passing
    assert rc == 0, err
    assert "gate: PASS (all 5 checks passed)" in out
    assert out.splitlines()[0].split() == ["neighbourhood", "model", "metric", "value", "threshold", "pairs", "verdict"]
    assert f"run directory: {run_dir}" in out
    for name in ("manifest.json", "pairs.parquet", "gate-junit.xml", "gate-summary.md", "gate.json"):
        assert (run_dir / name).is_file(), name


def test_passing_junit_parses(passing):
    run_dir = passing[3]
    root = ET.parse(run_dir / "gate-junit.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "0"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "tiny-chat/bf16"
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ["noise_floor: noise floor exact (identical pairs reproduce)", "reverse: mean_emb_dist <= 1", "reverse: flip_rate <= 1",
                     "add: mean_emb_dist - floor <= 2", "add: early_divergence_share@4 - floor <= 1"]
    assert not root.findall(".//failure")


def test_step_summary_appended(passing):
    run_dir, step = passing[3], passing[4]
    text = step.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")  # appended, never overwritten: other steps write there too
    md = (run_dir / "gate-summary.md").read_text(encoding="utf-8")
    assert text == "earlier step\n" + md
    assert "stabprobe gate: PASS" in md and "| reverse | tiny-chat/bf16 | mean_emb_dist |" in md


def test_gate_pairs_grouped_by_neighbourhood(passing):
    pairs = pd.read_parquet(passing[3] / "pairs.parquet")
    # The identical pair is always added (the noise floor), and every pair id starts with its neighbourhood.
    assert set(pairs["pair_id"]) == {
        "reverse/identical/identical", "reverse/noop_format/trailing_space", "reverse/punctuation/final_question",
        "add/identical/floor-1", "add/synonym/pair-1",
    }
    assert (pairs.loc[pairs["rung"] == "identical", "emb_dist"] == 0).all()


def test_failing_config_exits_1_and_names_the_check(failing):
    assert failing.exit_code == 1
    by_key = {(c.neighbourhood, c.model, c.metric): c for c in failing.checks}
    breach = by_key[("sum", "tiny-chat", "mean_emb_dist")]
    assert not breach.passed and breach.value is not None and breach.value > 0 and breach.n_pairs == 5
    assert "largest: sum/" in breach.message
    assert by_key[("add", "tiny-chat", "mean_emb_dist")].passed
    assert "FAIL sum tiny-chat/bf16 mean_emb_dist <= 0: mean_emb_dist " in failing.terminal
    assert failing.terminal.splitlines()[-1] == f"gate: FAIL ({len(failing.failed)} of {len(failing.checks)} checks failed)"


def test_failed_model_fails_its_checks(failing):
    mine = [c for c in failing.checks if c.model == "tiny-chat-tampered"]
    assert len(mine) == 2 and all(not c.passed for c in mine)
    assert all(c.message.startswith("model failed:") and "revision mismatch" in c.message for c in mine)


def test_failing_junit_failure_count_matches(failing):
    assert failing.junit == failing.run_dir.parent.parent / "ci" / "gate.xml"  # the config's `junit`, relative to it
    root = ET.parse(failing.junit).getroot()
    failures = root.findall(".//testcase/failure")
    assert len(failures) == int(root.get("failures")) == len(failing.failed) == 3
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"tiny-chat/bf16", "tiny-chat-tampered/bf16"}
    assert suites["tiny-chat/bf16"].get("failures") == "1" and suites["tiny-chat-tampered/bf16"].get("failures") == "2"
    kinds = sorted(f.get("type") for f in failures)
    assert kinds == ["model_failed", "model_failed", "threshold"]
    assert (failing.run_dir / "gate-summary.md").read_text(encoding="utf-8").startswith("### ❌ stabprobe gate: FAIL")


# ---------------------------------------------------------------- malformed configs: exit 2, nothing created

BASE = """\
models: [tiny-chat]
lengths: [16]
out: runs
neighbourhoods:
  - id: a
    prompt: "Reverse the word apple."
    rungs: [punctuation]
    thresholds: {max_mean_emb_dist: 1.0}
"""


@pytest.mark.parametrize(
    "text, field, message",
    [
        (BASE + "retries: 3\n", "retries", "unknown key"),
        (BASE.replace("    rungs:", "    rungz: [x]\n    rungs:"), "neighbourhoods[0].rungz", "unknown key"),
        (BASE.replace("max_mean_emb_dist: 1.0", "max_mean_emb_dist: high"),
         "neighbourhoods[0].thresholds.max_mean_emb_dist", "expected a number in [0, 2]"),
        (BASE.replace("max_mean_emb_dist: 1.0", "max_flip_rate: 1.5"),
         "neighbourhoods[0].thresholds.max_flip_rate", "expected a number in [0, 1]"),
        (BASE.replace("[16]", "16"), "lengths", "expected a list"),
        (BASE.replace("    thresholds: {max_mean_emb_dist: 1.0}\n", ""), "neighbourhoods[0].thresholds", "missing"),
        (BASE.replace("{max_mean_emb_dist: 1.0}", "{relative_to_noise_floor: true}"),
         "neighbourhoods[0].thresholds", "no threshold"),
        (BASE.replace("[punctuation]", "[punctuation, typos]"), "neighbourhoods[0].rungs", "unknown rung 'typos'"),
        (BASE.replace("    rungs:", "    prompt: again\n    rungs:"), "prompt", "duplicate key at line 7"),
        (BASE.replace("{max_mean_emb_dist: 1.0}", "{max_early_divergence_share: 0.5}"),
         "neighbourhoods[0].thresholds.early_step", "go together"),
        (BASE.replace("[punctuation]", "[punctuation]\n    edit_kinds: [comma_to_semicolon]"),
         "neighbourhoods[0].rungs", "no punctuation pair could be made from the prompt (comma_to_semicolon: no comma)"),
        (BASE + "    length: 32\n", "neighbourhoods[0].length", "32 is not one of lengths [16]"),
        (BASE.replace("[tiny-chat]", "[nope]"), "models[0]", "neither a name in"),
        (BASE + BASE.split("neighbourhoods:\n")[1], "neighbourhoods[1].id", "duplicate id 'a'"),
    ],
    ids=["unknown-key", "unknown-nested-key", "wrong-type", "out-of-range", "not-a-list", "missing-thresholds",
         "no-threshold", "unknown-rung", "duplicate-key", "early-step-missing", "edit-not-applicable",
         "length-not-decoded", "unknown-model", "duplicate-neighbourhood"],
)
def test_malformed_config_exits_2(tmp_path, text, field, message):
    config = write(tmp_path / "gate.yaml", text)
    rc, out, err = _cli("gate", "--config", str(config))
    assert rc == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert line.startswith(f"stabprobe: error: {config}: {field}: ") and message in line, line
    assert not (tmp_path / "runs").exists()


def test_unpinned_hub_model_refused(tmp_path):
    write(tmp_path / "reg.yaml", "models:\n  - name: hub\n    source: owner/model\n")
    config = write(tmp_path / "gate.yaml", BASE.replace("models: [tiny-chat]", "models: [hub]\nregistry: reg.yaml"))
    rc, _, err = _cli("gate", "--config", str(config))
    assert rc == 2 and f"{config}: models[0]: hub: hub model is not pinned" in err and "allow_unpinned: true" in err
    assert not (tmp_path / "runs").exists()


def test_example_config_is_valid(root):
    cfg = load_gate_config(root / "gate.example.yaml")
    assert [m.name for m in cfg.models] == ["tiny-chat"] and len(cfg.neighbourhoods) == 3
    assert cfg.junit == root / "runs" / "gate-junit.xml"


def test_missing_config_file(tmp_path):
    rc, _, err = _cli("gate", "--config", str(tmp_path / "nope.yaml"))
    assert rc == 2 and f"{tmp_path / 'nope.yaml'}: file: does not exist" in err


# ---------------------------------------------------------------- evaluation rules, on hand-made rows

def _rows(*rows: tuple[str, str, float, bool, int]) -> pd.DataFrame:
    return pd.DataFrame([{"pair_id": pid, "rung": rung, "length": 16, "emb_dist": d, "top1_flip": f, "first_div": fd}
                         for pid, rung, d, f, fd in rows])


NB_IDS = ("n/identical/identical", "n/punctuation/x", "n/punctuation/y")
OK = ModelRun("m", "bf16", "ok", "", 1.0, "")


def test_relative_to_noise_floor_subtracts_the_identical_pair():
    t = Thresholds(max_mean_emb_dist=0.12, relative_to_noise_floor=True)
    rows = _rows(("n/identical/identical", "identical", 0.05, False, 3), ("n/punctuation/x", "punctuation", 0.1, False, 2),
                 ("n/punctuation/y", "punctuation", 0.2, True, 0))
    (c,) = check_neighbourhood(GateNeighbourhood("n", 16, t, NB_IDS), OK, rows)
    assert c.verdict == PASS and c.floor == pytest.approx(0.05) and c.value == pytest.approx(0.1)
    (c,) = check_neighbourhood(GateNeighbourhood("n", 16, Thresholds(max_mean_emb_dist=0.12), NB_IDS), OK, rows)
    assert not c.passed and c.value == pytest.approx(0.15)  # absolute: the floor is not subtracted


def test_early_divergence_counts_first_div_1_to_k_only():
    t = Thresholds(max_early_divergence_share=0.5, early_step=2)
    rows = _rows(("n/identical/identical", "identical", 0.0, False, 0), ("n/punctuation/x", "punctuation", 0.1, False, 2),
                 ("n/punctuation/y", "punctuation", 0.0, False, 0))  # 0 = never diverged, not "at step 0"
    (c,) = check_neighbourhood(GateNeighbourhood("n", 16, t, NB_IDS), OK, rows)
    assert c.metric == "early_divergence_share@2" and c.value == 0.5 and c.passed


def test_unmeasurable_checks_fail():
    t = Thresholds(max_mean_emb_dist=2.0, relative_to_noise_floor=True)
    nb = GateNeighbourhood("n", 16, t, NB_IDS)
    only_floor = _rows(("n/identical/identical", "identical", 0.0, False, 0))
    (c,) = check_neighbourhood(nb, OK, only_floor)
    assert not c.passed and "the audit dropped all 2" in c.message
    no_floor = _rows(("n/punctuation/x", "punctuation", 0.1, False, 2))
    (c,) = check_neighbourhood(nb, OK, no_floor)
    assert not c.passed and "no noise floor" in c.message
    nan = _rows(("n/identical/identical", "identical", 0.0, False, 0), ("n/punctuation/x", "punctuation", float("nan"), False, 2))
    (c,) = check_neighbourhood(nb, OK, nan)
    assert not c.passed and "nan" in c.message


def test_junit_survives_control_characters(tmp_path):
    config = write(tmp_path / "gate.yaml", BASE.replace("models: [tiny-chat]", f"models: [tiny-chat]\nregistry: {REGISTRY}"))
    cfg = load_gate_config(config)
    run = ModelRun("m", "bf16", "failed", "OSError: bad\x00byte\x1b[0m", 0.0, "")
    check = GateCheck("a", "m", "bf16", "mean_emb_dist", 1.0, False, 16, None, None, None, 0, 2, "fail",
                      f"model failed: {run.error}")
    root = ET.fromstring(junit_xml(cfg, tmp_path, [run], [check], "2026-01-01T00:00:00").encode())
    assert root.find(".//failure").get("message").startswith("model failed: OSError: bad")


def test_unwritable_step_summary_is_an_environment_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a directory: cannot be appended to
    with pytest.raises(EnvironmentProblem, match="GITHUB_STEP_SUMMARY"):
        append_step_summary("x\n")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert append_step_summary("x\n") is None


def test_the_cli_and_the_python_api_run_the_gate_on_the_same_thread_count(passing, failing):
    """The thread policy is applied below the CLI (harness.core.threads): one thread on CPU either way."""
    import torch

    cli = json.loads((passing[3] / "manifest.json").read_text(encoding="utf-8"))["device"]["torch_threads"]
    api = json.loads((failing.run_dir / "manifest.json").read_text(encoding="utf-8"))["device"]["torch_threads"]
    assert cli == api == (torch.get_num_threads() if torch.cuda.is_available() else 1)


def test_noise_floor_check_fails_on_a_nondeterministic_variant_unless_allowed():
    from harness.gate.floor import floor_checks
    from harness.gate.records import ModelRun

    rows = []
    for k in range(3):
        rows += [{"model": "m", "variant": v, "length": 16, "prompt_id": f"p{k}", "pair_id": f"p{k}/{r}", "rung": r,
                  "emb_dist": (0.25 if v == "int8" else 0.0) if r == "identical" else 0.3}
                 for v in ("bf16", "int8") for r in ("identical", "punctuation")]
    pairs = pd.DataFrame(rows)
    runs = [ModelRun("m", "bf16", "ok", "", 1.0, ""), ModelRun("m", "int8", "ok", "", 1.0, "")]
    bf16, int8 = floor_checks(pairs, runs, 16, ())
    assert bf16.passed and not int8.passed
    assert "m/int8 is nondeterministic" in int8.message and "3 of 3 identical pairs non-zero" in int8.message
    assert all(c.passed for c in floor_checks(pairs, runs, 16, ("int8",)))
    assert all(c.passed for c in floor_checks(pairs, runs, 16, ("m/int8",)))
