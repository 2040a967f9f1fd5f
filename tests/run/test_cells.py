"""Cache, crash safety, shards and the Ray executor: all must give the rows of one plain local run."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.cli import main
from tests.conftest import ROOT, demo_ladder, write

LADDER = demo_ladder("cells", ["trailing_space", "parenthesized_word", "newline_in_sentence", "final_question"],
                     paraphrase=True, extra='  - {id: cap, topic: demo-geography, text: "What is the capital of France?"}\n')
MODELS = "tiny-chat,tiny-think"  # three cells: tiny-chat/bf16, tiny-think/bf16, tiny-think/bf16-nothink
SORT = ["model", "variant", "pair_id", "length"]


def _table(run_dir, name="pairs.parquet"):
    return pd.read_parquet(run_dir / name).sort_values(SORT).reset_index(drop=True)


def _only_run(out):
    dirs = [d for d in out.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _run(tmp_path, out_name, *extra):
    ladder = write(tmp_path / "ladder.yaml", LADDER)
    out = tmp_path / out_name
    rc = main(["run", "--models", MODELS, "--ladder", str(ladder), "--lengths", "8,24", "--out", str(out),
               "--no-progress", *extra])
    return rc, _only_run(out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    rc, run_dir = _run(tmp, "runs", "--no-cache")
    assert rc == 0
    return run_dir


def test_second_identical_run_decodes_nothing(tmp_path, reference, capsys):
    cache = tmp_path / "cache"
    _run(tmp_path, "first", "--cache", str(cache))
    capsys.readouterr()
    rc, second = _run(tmp_path, "second", "--cache", str(cache))
    out = capsys.readouterr().out
    assert rc == 0 and "decoded 0 prompts" in out
    import json

    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["decoded_prompts"] == 0 and manifest["cached_prompts"] > 0
    pd.testing.assert_frame_equal(_table(second), _table(reference))


def test_killed_run_resumes_to_the_same_rows(tmp_path, reference):
    ladder = write(tmp_path / "ladder.yaml", LADDER)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--models", MODELS, "--ladder", str(ladder), "--lengths", "8,24",
           "--out", str(out), "--no-progress", "--no-cache"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        # Kill once the first cell is finished and before the run is: a real mid-run SIGKILL.
        while time.time() < deadline:
            finished = list(out.glob("*/cells/*/cell.json"))
            if finished or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_dir = _only_run(out)
    import json

    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"  # never marked complete
    assert not (run_dir / "pairs.parquet").exists()
    rc = main(["run", "--resume", str(run_dir), "--no-progress", "--no-cache"])
    assert rc == 0
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    pd.testing.assert_frame_equal(_table(run_dir), _table(reference))


def test_shards_merge_to_a_single_run(tmp_path, reference):
    rc0, s0 = _run(tmp_path, "s0", "--no-cache", "--shard", "0/2")
    rc1, s1 = _run(tmp_path, "s1", "--no-cache", "--shard", "1/2")
    import json

    assert json.loads((s0 / "manifest.json").read_text())["status"] == "partial"
    assert main(["merge", str(s0), str(s1), "--out", str(tmp_path / "merged")]) == 0
    merged = _only_run(tmp_path / "merged")
    assert json.loads((merged / "manifest.json").read_text())["status"] == "complete"
    pd.testing.assert_frame_equal(_table(merged), _table(reference))
    pd.testing.assert_frame_equal(_table(merged, "drift.parquet"), _table(reference, "drift.parquet"))


def test_merge_refuses_different_configs(tmp_path, capsys):
    _, a = _run(tmp_path, "a", "--no-cache", "--shard", "0/2")
    ladder = write(tmp_path / "ladder.yaml", LADDER)
    main(["run", "--models", "tiny-chat", "--ladder", str(ladder), "--lengths", "8", "--out", str(tmp_path / "b"),
          "--no-progress", "--no-cache"])
    b = _only_run(tmp_path / "b")
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_ray_executor_equals_local(tmp_path, reference, monkeypatch):
    pytest.importorskip("ray", reason="ray is a test dependency (pyproject [test]); missing means a broken install")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    rc, run_dir = _run(tmp_path, "ray", "--no-cache", "--executor", "ray")
    assert rc == 0
    pd.testing.assert_frame_equal(_table(run_dir), _table(reference))
    pd.testing.assert_frame_equal(_table(run_dir, "drift.parquet"), _table(reference, "drift.parquet"))


SUBSET = """ladder: cells-subset
edit_kinds: [trailing_space]
prompts:
  - {id: rev, topic: demo-reverse, text: "Reverse the word apple.", curated: {paraphrase: ["Spell apple backwards."]}}
  - {id: add, topic: demo-arithmetic, text: "What is 7 plus 5?"}
"""
TRACE_COLUMNS = ["div_delta_tcb_a", "div_flip_radius_a"]


def test_compact_cache_rows_score_like_a_fresh_run(tmp_path, reference):
    """The cache holds compact prompt ends: a run over another ladder that reuses them gets the prompt ends again
    (one-step decodes) and the trace steps it lacks (re-decodes), and scores exactly what an uncached run does.
    ``--store-full-dist`` writes the full rows into generations.parquet, never into the cache."""
    import json

    import numpy as np

    from harness.core.memo import Memo
    from harness.run.keys import GENERATIONS

    cache = tmp_path / "cache"
    subset = write(tmp_path / "subset.yaml", SUBSET)
    assert main(["run", "--models", MODELS, "--ladder", str(subset), "--lengths", "8,24", "--out", str(tmp_path / "sub"),
                 "--no-progress", "--cache", str(cache), "--store-full-dist"]) == 0
    sub = _only_run(tmp_path / "sub")
    gens = pd.read_parquet(sub / "generations.parquet")
    assert gens.prompt_end_logprobs.map(len).eq(gens.prompt_end_vocab).all()
    cell = json.loads(next((sub / "cells").glob("tiny-chat--*/cell.json")).read_text())
    cached = Memo(cache).load_frame(GENERATIONS, cell["cache_key"])
    assert len(cached) and "prompt_end_logprobs" not in cached.columns and cached.prompt_end_top_ids.map(len).gt(0).all()

    rc, full = _run(tmp_path, "full", "--cache", str(cache))
    assert rc == 0
    records = json.loads((full / "manifest.json").read_text())["models"]
    assert sum(r["cached_prompts"] for r in records) > 0
    assert sum(r["decode_completion"]["prompt_ends_redecoded"] for r in records) > 0
    got, ref = _table(full), _table(reference)
    pd.testing.assert_frame_equal(got.drop(columns=TRACE_COLUMNS), ref.drop(columns=TRACE_COLUMNS))
    # fp32 products are not row-invariant (harness.core.gemm): traces evaluated next to other states agree to rounding
    for col in TRACE_COLUMNS:
        np.testing.assert_allclose(got[col], ref[col], rtol=1e-5)
        assert got[col].notna().sum() == ref[col].notna().sum() > 0
