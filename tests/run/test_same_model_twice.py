"""Two copies of one demo model under different names never separate (issue 15).

A real run (real tokenizer, template, model and MiniLM) of ``models/tiny-chat``
and a byte-for-byte copy of its directory under another name, plus tiny-base
as a model that does differ. Eight base prompts, so a separation is
attainable at all: with n prompts the smallest two-sided sign-flip p is
2/2**n, and Holm over the 3 model pairs of a cell needs 3 * 2/2**n < 0.05.
"""

from __future__ import annotations

import json
import shutil

from harness.cli import main
from tests.conftest import MODELS, write

LADDER = """ladder: twins
edit_kinds: [trailing_space]
prompts:
""" + "".join(f'  - {{id: p{i}, topic: demo, in_domain: true, text: "{t}"}}\n' for i, t in enumerate([
    "Reverse the word apple.", "What is 7 plus 5?", "Write the word house in uppercase.", "What is the capital of France?",
    "Reverse the word table.", "What is 3 plus 4?", "Write the word river in uppercase.", "What is the capital of Italy?"]))


def test_two_copies_of_one_model_never_separate(tmp_path, capsys):
    twin = tmp_path / "tiny-chat-twin"
    shutil.copytree(MODELS / "tiny-chat", twin)
    rc = main(["run", "--models", f"{MODELS / 'tiny-chat'},{twin},tiny-base", "--ladder", str(write(tmp_path / "l.yaml", LADDER)),
               "--lengths", "8", "--out", str(tmp_path / "runs"), "--no-cache"])
    capsys.readouterr()
    assert rc == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    comps = [(c, x) for c in summary["clusters"] for x in c["comparisons"]]
    twins = [x for _, x in comps if {x["a"], x["b"]} == {"tiny-chat", "tiny-chat-twin"}]
    assert twins and all(x["n_prompts"] == 8 for x in twins)  # identical, noop_format, positive_control
    assert not any(x["separated"] for x in twins)
    assert all(x["p"] == 1.0 for x in twins)  # decoded identically: every per-prompt difference is exactly 0
    for c in summary["clusters"]:
        letters = {m["model"]: m["letters"] for m in c["models"]}
        assert letters["tiny-chat"] == letters["tiny-chat-twin"]
    # Not a vacuous check: at 8 prompts a real difference does separate (tiny-base reads raw text, no template).
    assert any(x["separated"] for _, x in comps if "tiny-base" in (x["a"], x["b"]))
    assert summary["tests"]["family"] == "all model pairs within one variant x rung x length"
    assert summary["tests"]["family_size_max"] == 3
