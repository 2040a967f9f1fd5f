"""The run directory: creation and atomic writes.

Every file is written to a temporary name in the same directory and renamed
into place, so a crash or a full disk never leaves a half-written file under
its final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from pathlib import Path
from typing import Any

from harness.core.jsonsafe import json_default
from harness.errors import InputError

MANIFEST = "manifest.json"
AUDIT = "audit.parquet"
GENERATIONS = "generations.parquet"
PAIRS = "pairs.parquet"
DRIFT = "drift.parquet"
SUMMARY = "summary.json"
REPORT_MD = "report.md"


def new_run_dir(out: Path, suffix: str = "") -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(str(out), "--out", f"cannot create output directory ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise InputError(str(out), "--out", "output directory is not writable")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = out / f"{stamp}-{secrets.token_hex(3)}{suffix}"
    run.mkdir()  # exist_ok=False: two runs never share a directory
    return run


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None:  # a failed write names no file: say which one (a full disk, a size limit)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: Path, frame) -> None:
    import io

    buf = io.BytesIO()
    # zstd: 11% smaller than the default snappy on generations.parquet (measured; 1% on pairs.parquet).
    frame.to_parquet(buf, index=False, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())
