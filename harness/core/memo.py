"""Memoization of report computations, keyed by the exact data they read.

A re-run whose tables are identical to an earlier run's should cost nothing,
including its statistics (bootstrap, permutation tests) and figures. Values
are stored as JSON (never pickle: a shared cache must not be able to run
code), under the run's cache directory; no cache directory, no memo.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.core import rundir
from harness.core.checked import read_checked, reject, write_checked

MEMO_VERSION = "1"  # bump when a memoized computation changes


def frame_digest(frame: pd.DataFrame | None) -> str:
    """Digest of a table's content (parquet bytes: columns, types and values)."""
    if frame is None:
        return "none"
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False)
    return hashlib.sha256(buf.getvalue()).hexdigest()


class Memo:
    def __init__(self, cache_dir: str | Path | None) -> None:
        self.root = None if not cache_dir else Path(cache_dir) / "memo"

    def get(self, namespace: str, parts: list[str], compute: Callable[[], Any],
            encode: Callable[[Any], Any] = lambda v: v, decode: Callable[[Any], Any] = lambda v: v) -> Any:
        if self.root is None:
            return compute()
        key = hashlib.sha256("\x1f".join([MEMO_VERSION, namespace, *parts]).encode()).hexdigest()
        path = self.root / namespace / f"{key}.json.checked"
        payload = read_checked(path)  # checksummed: a damaged memo is rejected and counted (harness.core.checked)
        if payload is not None:
            try:
                return decode(json.loads(payload.decode("utf-8")))
            except (ValueError, KeyError, TypeError):
                reject(path)  # right checksum, wrong content (another version): recomputed below
        value = compute()
        write_checked(path, json.dumps(encode(value), default=rundir._json_default).encode("utf-8"))
        return value


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
