"""ladders/tasks.yaml and tasks-small.yaml: what the task ladder promises, and that they are what make_tasks.py writes."""

from __future__ import annotations

import subprocess
import sys

from harness.ladder.load import load_ladder
from harness.ladder.records import RUNGS

KINDS = {"arithmetic", "factual", "choice", "extraction", "classification", "format"}


def test_task_ladder_has_200_answerable_prompts_of_every_kind_and_every_rung(root):
    ladder = load_ladder(root / "ladders" / "tasks.yaml")
    assert len(ladder.prompts) >= 200
    assert all(p.expected is not None for p in ladder.prompts)
    assert {p.topic for p in ladder.prompts} == KINDS
    counts = ladder.rung_counts()
    assert all(counts[r] > 0 for r in RUNGS), counts  # format and option_order included
    assert counts["identical"] == len(ladder.prompts) and counts["option_order"] >= 40
    assert all(p.check is not None for p in ladder.pairs if p.rung != "positive_control")


def test_small_task_ladder_is_a_subset_with_every_rung(root):
    big = {p.id: p.text for p in load_ladder(root / "ladders" / "tasks.yaml").prompts}
    small = load_ladder(root / "ladders" / "tasks-small.yaml")
    assert all(big[p.id] == p.text for p in small.prompts)
    assert {p.topic for p in small.prompts} == KINDS
    assert all(n > 0 for n in small.rung_counts().values())


def test_the_ladder_files_are_what_make_tasks_writes(root, tmp_path):
    before = {f: (root / "ladders" / f).read_text(encoding="utf-8") for f in ("tasks.yaml", "tasks-small.yaml")}
    code = (f"import sys, pathlib; sys.path.insert(0, {str(root / 'ladders')!r}); import make_tasks; "
            f"make_tasks.HERE = pathlib.Path({str(tmp_path)!r}); make_tasks.main()")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for f, text in before.items():
        assert (tmp_path / f).read_text(encoding="utf-8") == text, f"{f} is stale: run python ladders/make_tasks.py"
