"""`stabprobe gate` on answers: thresholds on the answer flip rate and the accuracy drop (one real run on tiny-chat)."""

from __future__ import annotations

import pytest

from harness.gate.config import GateNeighbourhood, Thresholds
from harness.gate.run import check_neighbourhood, run_gate
from harness.gate.records import FAIL, ModelRun, PASS
from harness.errors import InputError
from harness.gate.config import load_gate_config
from tests.conftest import write

import pandas as pd

CONFIG = """\
models: [tiny-chat]
lengths: [16]
out: runs
neighbourhoods:
  # tiny-chat answers "What is 7 plus 5?" right and "What is 7 added to 5?" wrong: a correctness flip.
  - id: flips
    pairs:
      - {a: "What is 7 plus 5?", b: "What is 7 added to 5?", rung: synonym}
    answer: 12
    check: number
    thresholds: {max_answer_flip_rate: 0.0, max_accuracy_drop: 1.0}
  - id: holds
    pairs:
      - {a: "What is 7 plus 5?", b: "Add 7 and 5.", rung: paraphrase}
    answer: 12
    check: number
    thresholds: {max_answer_flip_rate: 0.0}
"""


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate-answers")
    config = write(tmp / "gate.yaml", CONFIG)
    return run_gate(config, argv=("stabprobe", "gate", "--config", str(config)), progress=False)


def test_gate_fails_on_the_answer_flip_rate(gate):
    assert gate.exit_code == 1
    by = {(c.neighbourhood, c.metric): c for c in gate.checks}
    flip = by[("flips", "answer_flip_rate")]
    assert flip.verdict == FAIL and flip.value == 1.0 and flip.n_pairs == 1
    assert "answer_flip_rate 1.0000 > 0" in flip.message and "flips/synonym/pair-1" in flip.message
    drop = by[("flips", "accuracy_drop")]
    assert drop.verdict == PASS and drop.value == 1.0  # right on a, wrong on b: the whole accuracy is lost
    assert by[("holds", "answer_flip_rate")].verdict == PASS and by[("holds", "answer_flip_rate")].value == 0.0
    assert "FAIL flips tiny-chat/bf16 answer_flip_rate <= 0" in gate.terminal


def test_pairs_without_a_correctness_fail_the_check():
    t = Thresholds(max_answer_flip_rate=0.5)
    rows = pd.DataFrame([{"pair_id": "n/identical/identical", "rung": "identical", "length": 16, "answer_flip": 0.0,
                          "correct_a": 1.0, "correct_b": 1.0},
                         {"pair_id": "n/semantic_small/x", "rung": "semantic_small", "length": 16,
                          "answer_flip": float("nan"), "correct_a": 1.0, "correct_b": float("nan")}])
    nb = GateNeighbourhood("n", 16, t, ("n/identical/identical", "n/semantic_small/x"))
    (c,) = check_neighbourhood(nb, ModelRun("m", "bf16", "ok", "", 1.0, ""), rows)
    assert c.verdict == FAIL and "undefined (nan) on 1 of 1" in c.message


@pytest.mark.parametrize("extra, field, message", [
    ("    thresholds: {max_answer_flip_rate: 0.1}\n", "neighbourhoods[0].thresholds.max_answer_flip_rate",
     "needs the neighbourhood's expected `answer`"),
    ("    answer: '('\n    check: regex\n    thresholds: {max_answer_flip_rate: 0.1}\n", "neighbourhoods[0].answer",
     "regex does not compile"),
    ("    answer: x\n    check: vibes\n    thresholds: {max_answer_flip_rate: 0.1}\n", "neighbourhoods[0].check", "unknown check"),
    ("    answer: x\n    tolerance: 1\n    thresholds: {max_accuracy_drop: 0.1}\n", "neighbourhoods[0].tolerance",
     "only a `number` check takes a tolerance"),
    ("    answer: 1\n    check: number\n    thresholds: {max_accuracy_drop: 2}\n", "neighbourhoods[0].thresholds.max_accuracy_drop",
     "expected a number in [0, 1]"),
])
def test_bad_answer_config_is_refused_naming_the_field(tmp_path, extra, field, message):
    path = write(tmp_path / "g.yaml", "models: [tiny-chat]\nneighbourhoods:\n  - id: n\n"
                 "    pairs: [{a: 'What is 1 plus 1?', b: 'What is 1 added to 1?'}]\n" + extra)
    with pytest.raises(InputError) as err:
        load_gate_config(path)
    line = err.value.one_line()
    assert line.startswith(f"{path}: {field}: ") and message in line, line
