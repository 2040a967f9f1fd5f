"""Cache entries that carry their own checksum: written with it, verified on read.

Every cache (generations, scored results, embeddings, report memos) goes
through these two calls, so a flipped byte, a truncated file or a file from
something else is *rejected*: deleted, recomputed by the caller and counted
(``cache_entries_rejected`` in the manifest), never used and never fatal. An
entry is one file, ``MAGIC + sha256(payload) + payload``, written atomically.

A cache is an optimisation: when it cannot be written (full disk, read-only
mount) the run goes on without it, the failure is counted
(``cache_write_failures``) and the run ends with the environment's exit code
rather than blaming a model.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from harness.core import rundir

MAGIC = b"stabprobe-cache\x00v1\x00"
_DIGEST = 32

_lock = threading.Lock()
_counts = {"rejected": 0, "write_failures": 0}
_first_write_error: list[str] = []


class Rejected(Exception):
    """A cache entry that is unreadable or whose checksum does not match its content."""


def write_checked(path: Path, payload: bytes) -> bool:
    """Write one entry atomically; False (counted, never raised) when the cache's disk refuses it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)
        return True
    except OSError as exc:
        with _lock:
            _counts["write_failures"] += 1
            if not _first_write_error:
                _first_write_error.append(f"{exc.filename or path}: {exc.strerror or exc}")
        return False


def read_checked(path: Path) -> bytes | None:
    """The payload of an entry; None when there is none or it was rejected (then it is deleted and counted)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        reject(path)
        return None
    head = len(MAGIC) + _DIGEST
    if len(data) < head or not data.startswith(MAGIC) or hashlib.sha256(data[head:]).digest() != data[len(MAGIC):head]:
        reject(path)
        return None
    return data[head:]


def reject(path: Path) -> None:
    """Count a bad entry and remove it (so it is rewritten, not re-rejected, by the next write)."""
    with _lock:
        _counts["rejected"] += 1
    try:
        Path(path).unlink()
    except OSError:
        pass  # a read-only cache keeps its bad file; it is rejected again next time, never used


def counts() -> dict[str, int]:
    """Process-wide totals so far; a cell records the difference over its own work."""
    with _lock:
        return dict(_counts)


def first_write_error() -> str | None:
    with _lock:
        return _first_write_error[0] if _first_write_error else None
