"""Rows batching: a row's numbers do not depend on how many rows of its length share its batch.

The batches are the real ones in which tiny-chat's identical-rung copies of the task ladder's repeat-wallet prompt
were decoded (tests/fixtures/batches): replicate 0 among 16 other 21-token prompts, replicate 1 the only 21-token
prompt among 85-90-token ones. At step 5 (26 keys) its attention group had 12 rows in the first and 1 in the second,
so its q.k products ran on oneDNN in one and on ATen's own gemm in the other, and its post-norm states drifted from
step 5 on (same tokens; hidden_dist 6.5e-7) until harness.decode.rows padded small groups (``_group_pad``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.decode.rows import ONEDNN_MIN_VOLUME, _group_pad, greedy_rows
from harness.models.loading import load_model
from harness.models.registry import load_registry

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_chat():
    return load_model(load_registry().by_name()["tiny-chat"], "bf16")


def test_identical_copies_in_the_batches_that_drifted_decode_to_the_same_bits(tiny_chat, fixtures):
    case = json.loads((fixtures / "batches" / "tiny_chat_repeat_wallet.json").read_text())
    got = []
    for rep in (0, 1):
        rows, _, _ = greedy_rows(tiny_chat, case[f"batch_{rep}"], 8)
        got.append(rows[case[f"target_{rep}"]])
    a, b = got
    assert a.chosen == b.chosen and len(a.states) == 8  # 7 tokens and the end token
    differing = [t for t in range(8) if not np.array_equal(a.states[t], b.states[t])]
    assert differing == []  # was [5, 6, 7] before small groups were padded


@pytest.mark.parametrize("rows,heads,q,kv,d", [(1, 4, 1, 26, 32), (12, 4, 1, 26, 32), (1, 4, 1, 32, 32),
                                                (1, 4, 1, 33, 32), (2, 9, 1, 7, 64), (1, 1, 1, 1, 1)])
def test_group_pad_is_the_fewest_zero_rows_that_pass_the_onednn_threshold(rows, heads, q, kv, d):
    pad = _group_pad(rows, heads, q, kv, d)
    per_row = heads * q * kv * d
    assert pad >= 0 and (rows + pad) * per_row > ONEDNN_MIN_VOLUME
    assert pad == 0 or (rows + pad - 1) * per_row <= ONEDNN_MIN_VOLUME  # one row fewer would not pass
