"""Data-parallel decode within a cell (harness.run.workers): every table of N workers is the one of one worker.

Real demo models, real worker processes (spawn), no cache (so every output is decoded by the workers).
"""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest

from harness.decode.records import DecodeRequest
from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
from harness.run.pipeline import RunConfig, run
from harness.decode.greedy import plan_batches
from harness.run.dispatch import Dealer
from tests.conftest import ROOT

TABLES = ("generations.parquet", "pairs.parquet", "drift.parquet", "audit.parquet")


def _run(tmp, workers, models="tiny-chat", ladder="ladders/tasks-small.yaml", lengths=(8, 24), **kw):
    cfg = RunConfig(models=tuple(resolve_models(models, load_registry(DEFAULT_REGISTRY))),
                    ladder=load_ladder(ROOT / ladder), out=tmp, lengths=lengths, progress=False, workers=workers, **kw)
    return run(cfg)


def assert_same_tables(a, b) -> None:
    for name in TABLES:
        fa, fb = pd.read_parquet(a / name), pd.read_parquet(b / name)
        pd.testing.assert_frame_equal(fa, fb, check_exact=True, obj=name)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    # Two variants, so the drift table (bf16 against fp32) has rows too.
    one = _run(tmp / "one", 1, variants=("bf16", "fp32"))
    two = _run(tmp / "two", 2, variants=("bf16", "fp32"))
    return one, two


def test_two_workers_give_the_tables_of_one(one_and_two):
    one, two = one_and_two
    assert one.exit_code == 0 and two.exit_code == 0
    assert_same_tables(one.run_dir, two.run_dir)
    assert not pd.read_parquet(one.run_dir / "drift.parquet").empty
    m1 = json.loads((one.run_dir / "manifest.json").read_text())
    m2 = json.loads((two.run_dir / "manifest.json").read_text())
    assert m1["config"]["workers"] == 1 and m2["config"]["workers"] == 2
    for cell1, cell2 in zip(m1["models"], m2["models"]):
        assert cell1.get("workers") is None
        w = cell2["workers"]
        assert w["count"] == 2 and w["pool"] == "local" and len(w["rss_mib"]) == 2 and min(w["rss_mib"]) > 100
        assert len(set(cell2["decode_completion"].items()) ^ set(cell1["decode_completion"].items())) == 0
        assert cell1["generated_tokens"] == cell2["generated_tokens"]
    # The identical rung stays exact under the split.
    s = json.loads((two.run_dir / "summary.json").read_text())
    assert s["determinism"] == json.loads((one.run_dir / "summary.json").read_text())["determinism"]


def _req(key, n, rep=0):
    return DecodeRequest(key, tuple(range(n)), rep, key)


@pytest.mark.parametrize("batching", ["rows", "bucket"])
@pytest.mark.parametrize("n", [2, 3])
def test_dealing_keeps_copies_apart_and_deals_everything_once(n, batching):
    import random

    reqs = [_req(f"k{i}", 5 + i % 7) for i in range(60)] + [_req(f"k{i}", 5 + i % 7, 1) for i in range(0, 60, 3)]
    rng = random.Random(n)
    dealer, got, free = Dealer(reqs, n, 8, batching), {w: [] for w in range(n)}, list(range(n))
    originals = plan_batches([r for r in reqs if r.replicate == 0], 8, batching)
    while True:  # workers free up in a random order, as they would finishing batches of unknown cost
        rng.shuffle(free)
        w, batch = next(((w, b) for w in free for b in [dealer.next_for(w)] if b), (free[0], None))
        if batch is None:  # no worker could take one: what serve() does when every worker is idle
            batch = dealer.next_for(w, force=True)
        if batch is None:
            break
        got[w].append(batch)
    assert dealer.done
    dealt = [(r.prompt_key, r.replicate) for bs in got.values() for b in bs for r in b]
    assert sorted(dealt) == sorted((r.prompt_key, r.replicate) for r in reqs)  # each request once
    for bs in got.values():
        keys = [r.prompt_key for b in bs for r in b]
        assert len(keys) == len(set(keys)), "an identical-rung copy decoded by the worker of its original"
    # The originals' batches are the batches one worker plans for them (the same batch mates).
    assert sorted(map(tuple, (b for bs in got.values() for b in bs if b[0].replicate == 0)), key=str) == \
        sorted(map(tuple, originals), key=str)
    assert min(len(bs) for bs in got.values()) > 0


def test_too_many_workers_for_memory_is_refused(tmp_path):
    import subprocess
    import sys

    from harness.cli import main

    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--models", "tiny-chat", "--ladder",
                        "ladders/tasks-small.yaml", "--out", str(out), "--no-cache", "--workers", "100000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stabprobe: error: --workers: 100000: 100000 workers need about"), r.stderr
    assert "GiB is available" in lines[0]
    assert not out.exists() or not any(out.iterdir())  # refused before any run directory
    assert main(["run", "--models", "tiny-chat", "--out", str(out), "--workers", "0"]) == 2


def crashing_loader(entry, variant):
    """A loader whose model kills its own process on the first forward pass in a decode worker (as an OOM kill does)."""
    import multiprocessing

    from harness.models.loading import load_model

    loaded = load_model(entry, variant, lazy=True)
    if multiprocessing.parent_process() is None or entry.name != "tiny-chat":
        return loaded
    inner = loaded._load_weights

    def load():
        model = inner()
        model.register_forward_pre_hook(lambda *a: os.kill(os.getpid(), signal.SIGKILL))
        return model

    loaded._load_weights = load
    return loaded


def test_a_worker_killed_fails_its_cell_and_the_run_goes_on(tmp_path):
    res = _run(tmp_path, 2, models="tiny-chat,tiny-think", loader=crashing_loader, variants=("bf16",))
    assert res.exit_code == 3
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["status"] == "complete"
    chat, think = m["models"]
    assert chat["status"] == "failed" and think["status"] == "ok"
    assert chat["error"].startswith("WorkerDied: decode worker ") and "killed by SIGKILL" in chat["error"], chat["error"]
    assert think["workers"]["count"] == 2 and think["workers"]["startup_seconds"] > 0  # a fresh pool after the death
    assert (res.run_dir / "cells" / "tiny-chat--bf16" / "cell.json").is_file()


def test_ray_actors_give_the_tables_of_one_worker(one_and_two, tmp_path):
    ray = pytest.importorskip("ray")
    one, _ = one_and_two
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = _run(tmp_path, 2, variants=("bf16", "fp32"), executor="ray")
    finally:
        ray.shutdown()
    assert res.exit_code == 0
    assert_same_tables(one.run_dir, res.run_dir)
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["config"]["executor"] == "ray" and m["config"]["workers"] == 2
    assert [c["workers"]["pool"] for c in m["models"]] == ["ray", "ray"]
    assert all(c["workers"]["count"] == 2 for c in m["models"])


def test_twin_divergence_is_the_same_with_two_workers(tmp_path):
    # The twin stage (harness.run.twin) reads the cell's own model after the decode: merged outputs of two
    # workers must give it the same inputs, hence the same bits, as one worker's.
    one = _run(tmp_path / "one", 1, lengths=(8,), twin=True)
    two = _run(tmp_path / "two", 2, lengths=(8,), twin=True)
    assert one.exit_code == 0 and two.exit_code == 0
    assert_same_tables(one.run_dir, two.run_dir)
    pairs = pd.read_parquet(two.run_dir / "pairs.parquet")
    assert pairs["twin_kl_ab"].notna().any()
    assert (pairs.loc[pairs["rung"] == "identical", "twin_kl_ab"] == 0).all()


def test_default_count_rule_weighs_requests_by_the_weights():
    from harness.run.worker_memory import workers_for

    # The demo model (1.7 MiB of weights) on the default ladder: too little work to pay for a second worker.
    n, why = workers_for(None, 351, 2, 1.72)
    assert n == 1 and why.endswith(": 1") and "351 requests x 1.7 MiB" in why
    assert workers_for(None, 4081, 2, 1.72)[0] == 2  # the task ladder
    assert workers_for(None, 400, 2, 257.5)[0] == 2  # SmolLM2-135M on the small task ladder
    assert workers_for(None, 20, 2, 257.5)[0] == 1  # at most one per 16 requests whatever the weights
    assert workers_for(None, 4081, 2, 0.0)[0] == 2  # weights unknown: the request count alone
    assert workers_for(2, 351, 2, 1.72) == (2, None)  # asked for: split, whatever the work


def test_default_count_is_recorded_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("STABPROBE_WORKERS", "2")  # the run's default: 2 (as on a 2-core machine)
    res = _run(tmp_path, None, lengths=(8,), variants=("bf16",))
    assert res.exit_code == 0
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["config"]["workers"] == 2
    w = m["models"][0]["workers"]
    assert w["count"] == 1 and "MiB-requests" in w["chosen"] and w["chosen"].endswith(": 1"), w
    cell = json.loads(next(res.run_dir.glob("cells/*/cell.json")).read_text())
    assert cell["workers"] == w


def test_a_worker_process_counts_its_third_party_warnings_into_the_cell(tmp_path):
    # bitsandbytes int8 warns per call (40 times in a worker's own invariance probe); each worker process shows it
    # once, and its count must reach cell.json (issue 30: shown once, counted). The decode's batches are the same
    # either way and each worker probes once, so two workers count more than one; had the spawned worker's count
    # been left behind, the cell would hold only the run's own thread's (worker 0): no more than one worker's.
    def counted(run_dir):
        rec = json.loads((run_dir / "cells" / "tiny-chat--int8" / "cell.json").read_text())
        return sum(n for k, n in (rec.get("third_party_warnings") or {}).items() if "bitsandbytes" in k)

    one = _run(tmp_path / "one", 1, lengths=(8,), variants=("int8",))
    two = _run(tmp_path / "two", 2, lengths=(8,), variants=("int8",))
    assert one.exit_code == 0 and two.exit_code == 0
    n1, n2 = counted(one.run_dir), counted(two.run_dir)
    assert n1 > 1 and n2 > n1, (n1, n2)
