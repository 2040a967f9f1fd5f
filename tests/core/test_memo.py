"""The one memo store: one key function, JSON values, merged tables and file sets, all under one root."""

import pandas as pd

from harness.core.memo import Memo, memo_key


def test_key_is_the_canonical_json_of_namespace_and_material():
    assert memo_key("results", {"a": 1, "b": [1, 2]}) == memo_key("results", {"b": [1, 2], "a": 1})
    assert memo_key("results", {"a": 1}) != memo_key("generations", {"a": 1})
    assert memo_key("results", {"a": 1}) != memo_key("results", {"a": 2})


def test_no_cache_dir_means_no_memo(tmp_path):
    memo = Memo(None)
    calls = []
    assert memo.get("stats", ["x"], lambda: calls.append(1) or 7) == 7
    assert memo.get("stats", ["x"], lambda: calls.append(1) or 7) == 7
    assert len(calls) == 2
    assert memo.load_frame("generations", "ab" * 32).empty
    assert not memo.restore_files("results", "ab" * 32, ["a.parquet"], tmp_path)


def test_values_tables_and_files_share_one_layout(tmp_path):
    memo = Memo(tmp_path / "cache")
    calls = []
    assert memo.get("stats", ["digest"], lambda: calls.append(1) or {"m": 0.5}) == {"m": 0.5}
    assert memo.get("stats", ["digest"], lambda: calls.append(1) or {"m": 9.9}) == {"m": 0.5}
    assert len(calls) == 1

    key = memo_key("generations", {"model": "m"})
    memo.add_rows("generations", key, pd.DataFrame({"cache_ids": ["1,2", "3"], "replicate": [0, 0], "v": [1, 2]}),
                  unique=("cache_ids", "replicate"))
    memo.add_rows("generations", key, pd.DataFrame({"cache_ids": ["3", "3"], "replicate": [0, 1], "v": [5, 6]}),
                  unique=("cache_ids", "replicate"))
    rows = memo.load_frame("generations", key).sort_values(["cache_ids", "replicate"])
    assert rows[["cache_ids", "replicate", "v"]].values.tolist() == [["1,2", 0, 1], ["3", 0, 5], ["3", 1, 6]]

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    (src / "a.parquet").write_bytes(b"A")
    rkey = memo_key("results", {"cell": 1})
    assert not memo.restore_files("results", rkey, ["a.parquet"], dst)
    memo.store_files("results", rkey, ["a.parquet"], src)
    assert memo.restore_files("results", rkey, ["a.parquet"], dst) and (dst / "a.parquet").read_bytes() == b"A"

    stored = sorted(p.relative_to(tmp_path / "cache").parts[0] for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert set(stored) == {"stats", "generations", "results"}
    assert all(p.name.endswith(".checked") for p in (tmp_path / "cache").rglob("*") if p.is_file())  # checksummed
    for p in (tmp_path / "cache").rglob("*"):
        if p.is_file():
            namespace, shard, name = p.relative_to(tmp_path / "cache").parts[:3]
            assert name.startswith(shard) and len(shard) == 2
    # All or nothing: an incomplete entry is dropped (recomputed by the caller), never half restored.
    assert not memo.restore_files("results", rkey, ["a.parquet", "b.parquet"], dst)
    assert not memo.restore_files("results", rkey, ["a.parquet"], dst)


def test_an_unreadable_entry_is_a_miss_and_is_rewritten(tmp_path):
    memo = Memo(tmp_path)
    key = memo_key("generations", 1)
    path = memo.path("generations", key, ".parquet.checked")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    assert memo.load_frame("generations", key).empty
    assert not path.exists()  # rejected (checksum) and removed
    memo.add_rows("generations", key, pd.DataFrame({"cache_ids": ["1"], "replicate": [0]}), unique=("cache_ids", "replicate"))
    assert len(memo.load_frame("generations", key)) == 1
