"""The one memo store: generations, a cell's scored tables, statistics and figures, each keyed by what it reads.

A re-run whose inputs are identical to an earlier run's should cost nothing:
its decodes, its scoring, its statistics (bootstrap, permutation tests) and
its figures. Everything lives under the run's cache directory as
``<cache>/<namespace>/<key[:2]>/<key><suffix>``, keyed by :func:`memo_key`
(the one key function) over the exact material the value depends on. Values
are JSON, parquet or copied files (never pickle: a shared cache must not be
able to run code). Every entry carries its checksum (harness.core.checked): a
damaged one is rejected, counted and recomputed, never used. Files are
replaced atomically, so two runs sharing a cache can only lose each other's
newest additions (recomputed next time), never corrupt a file. No cache
directory, no memo.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from harness.core import rundir
from harness.core.checked import read_checked, reject, write_checked
from harness.core.jsonsafe import json_default

MEMO_VERSION = "1"  # bump when a memoized computation (statistics, figures) changes


def memo_key(namespace: str, material: Any) -> str:
    """sha256 of the namespace and the material as canonical JSON (sorted keys; anything else by ``str``)."""
    text = json.dumps([namespace, material], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def frame_digest(frame: pd.DataFrame | None) -> str:
    """Digest of a table's content (parquet bytes: columns, types and values)."""
    if frame is None:
        return "none"
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False)
    return hashlib.sha256(buf.getvalue()).hexdigest()


class Memo:
    def __init__(self, cache_dir: str | Path | None) -> None:
        self.root = None if not cache_dir else Path(cache_dir)

    def path(self, namespace: str, key: str, suffix: str = "") -> Path | None:
        return None if self.root is None else self.root / namespace / key[:2] / f"{key}{suffix}"

    # -- JSON values (statistics, figures) ----------------------------------------

    def has(self, namespace: str, parts: list[str]) -> bool:
        """Whether :meth:`get` would find a stored value (no cache: False); a damaged one is found by get itself."""
        path = self.path(namespace, memo_key(namespace, [MEMO_VERSION, *parts]), ".json.checked")
        return path is not None and path.exists()

    def get(self, namespace: str, parts: list[str], compute: Callable[[], Any],
            encode: Callable[[Any], Any] = lambda v: v, decode: Callable[[Any], Any] = lambda v: v) -> Any:
        path = self.path(namespace, memo_key(namespace, [MEMO_VERSION, *parts]), ".json.checked")
        if path is None:
            return compute()
        payload = read_checked(path)  # checksummed: a damaged memo is rejected and counted (harness.core.checked)
        if payload is not None:
            try:
                return decode(json.loads(payload.decode("utf-8")))
            except (ValueError, KeyError, TypeError):
                reject(path)  # right checksum, wrong content (another version): recomputed below
        value = compute()
        write_checked(path, json.dumps(encode(value), default=json_default).encode("utf-8"))
        return value

    # -- tables that grow row by row (generations) -----------------------------------

    def load_frame(self, namespace: str, key: str) -> pd.DataFrame:
        path = self.path(namespace, key, ".parquet.checked")
        payload = None if path is None else read_checked(path)
        if payload is None:
            return pd.DataFrame()
        try:
            return pd.read_parquet(io.BytesIO(payload))
        except Exception:  # noqa: BLE001 - checksum right but not our parquet (another version): a miss
            reject(path)
            return pd.DataFrame()

    def add_rows(self, namespace: str, key: str, frame: pd.DataFrame, unique: Sequence[str]) -> None:
        """Merge ``frame`` into the stored table; a row with the same ``unique`` columns replaces the old one."""
        path = self.path(namespace, key, ".parquet.checked")
        if path is None or frame.empty:
            return
        old = self.load_frame(namespace, key)
        merged = pd.concat([old, frame], ignore_index=True) if not old.empty else frame
        merged = merged.drop_duplicates(subset=list(unique), keep="last")
        buf = io.BytesIO()
        merged.to_parquet(buf, index=False, compression="zstd")
        write_checked(path, buf.getvalue())

    # -- sets of files (a cell's scored tables) --------------------------------------

    def restore_files(self, namespace: str, key: str, names: Sequence[str], dest: Path) -> bool:
        """Copy every one of ``names`` into ``dest``; False (nothing copied) unless all are stored and intact."""
        src = self.path(namespace, key)
        if src is None or not src.is_dir():
            return False
        payloads = {f: read_checked(src / f"{f}.checked") for f in names}
        if any(v is None for v in payloads.values()):
            # Incomplete or damaged: drop the whole entry (read_checked counted the bad file); recomputed.
            for f in names:
                (src / f"{f}.checked").unlink(missing_ok=True)
            return False
        for f, data in payloads.items():
            rundir.atomic_write_bytes(Path(dest) / f, data)
        return True

    def store_files(self, namespace: str, key: str, names: Sequence[str], src: Path) -> None:
        dst = self.path(namespace, key)
        if dst is None:
            return
        for f in names:
            if not write_checked(dst / f"{f}.checked", (Path(src) / f).read_bytes()):
                return  # counted by write_checked; the run goes on without this entry


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
