"""The embedder computes with every CPU the process may use, keeps the decode's thread count, and keys its cache by
the thread count (the real MiniLM)."""

from __future__ import annotations

import numpy as np
import torch

from harness.core.threads import available_cpus
from harness.score.embedder import Embedder

TEXTS = ["The capital of France is Paris.", "Paris is France's capital city.", "Seven plus five is twelve.",
         "I do not know. " * 40]  # the last is longer than one window


def test_threads_default_to_the_cpus_and_the_decode_setting_is_restored(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Embedder().info.threads == available_cpus() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray worker's share
    assert Embedder().info.threads == 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        emb = Embedder(threads=2)
        seen = []
        model = emb.model
        real = model.encode

        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return real(*args, **kwargs)

        monkeypatch.setattr(model, "encode", spy)
        emb.encode(TEXTS)
        assert seen and set(seen) == {2}  # the long text's windows too
        assert torch.get_num_threads() == 1  # the decode's one thread is back
    finally:
        torch.set_num_threads(before)


def test_thread_counts_agree_and_never_share_a_cache_entry(tmp_path):
    one, two = Embedder(threads=1, cache_dir=tmp_path), Embedder(threads=2, cache_dir=tmp_path)
    assert one.info.method != two.info.method and one._memo_dir() != two._memo_dir()
    assert "/t" not in one.info.method  # one thread keeps the keys of earlier runs
    a, b = one.encode(TEXTS), two.encode(TEXTS)
    # bitwise equal on the development machine (oneDNN splits fp32 products over rows and columns, not the sum);
    # asserted only to the precision a distance is reported with, because another machine may split differently
    assert np.abs(a - b).max() <= 1e-6
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-6)
