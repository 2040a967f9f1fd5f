"""The teacher-forced probe capture (``--capture probe``) split over workers: the tables of one worker.

The probe (harness.decode.probe) reads every output alone, one forward over prompt + tokens; split over two
worker processes (harness.run.workers) it must give the same bits, identical rung included. Real demo model,
real spawned workers, no cache.
"""

from __future__ import annotations

import json

import pandas as pd

from tests.run.test_workers import _run, assert_same_tables


def test_probe_capture_with_two_workers_gives_the_tables_of_one(tmp_path):
    one = _run(tmp_path / "one", 1, lengths=(8,), capture="probe")
    two = _run(tmp_path / "two", 2, lengths=(8,), capture="probe")
    assert one.exit_code == 0 and two.exit_code == 0
    assert_same_tables(one.run_dir, two.run_dir)
    m1 = json.loads((one.run_dir / "manifest.json").read_text())
    m2 = json.loads((two.run_dir / "manifest.json").read_text())
    assert m1["config"]["capture"] == m2["config"]["capture"] == "probe"
    assert [c["workers"]["count"] for c in m2["models"]] == [2]
    pairs = pd.read_parquet(two.run_dir / "pairs.parquet")
    same = pairs[pairs["rung"] == "identical"]
    assert len(same) and (same["tok_edit"] == 0).all() and (same["emb_dist"] == 0).all()
