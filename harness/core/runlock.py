"""One writer per run directory, and a run whose writer died is recognised as such.

The writer (a run, a ``--resume``, a merge, ``stabprobe report``, a study) holds an exclusive ``fcntl.flock``
on ``RUN_DIR/.lock`` while it writes. The kernel drops the lock when the process ends however it ends
(SIGKILL, a segfault, a full disk that stopped the last manifest write), so no stale lock is ever left behind:
a second writer is refused while the first lives, and the next one after it died gets the lock.

A manifest that still says ``running`` while nobody holds the lock was left by a writer that died before it
could record how: :func:`claim` rewrites it ``crashed`` (with that reason) before anything reads it, so
``report``, ``--resume`` and ``merge`` never see ``running`` from a dead process.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.errors import EnvironmentProblem

LOCK = ".lock"
DEAD_WRITER = ("the process writing this run ended without recording how (killed, or a crash the manifest "
               "could not record); finish it with `stabprobe run --resume RUN_DIR`")


def _holder(fh) -> str:
    fh.seek(0)
    text = fh.read().strip()
    return f" (pid {text})" if text else ""


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; refused (exit 4) while another live process holds it."""
    import fcntl

    path = Path(run_dir) / LOCK
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvironmentProblem(
                f"{run_dir}: another stabprobe process{_holder(fh)} is writing this run directory; "
                "wait for it to finish (one writer per run directory)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


@contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """:func:`hold`, and a manifest left ``running`` by a dead writer rewritten ``crashed`` first."""
    with hold(run_dir):
        mark_dead_writer(Path(run_dir))
        yield


def mark_dead_writer(run_dir: Path) -> bool:
    """Under the lock: a manifest saying ``running`` was left by a process that died; say ``crashed``."""
    from harness.core.rundir import MANIFEST, atomic_write_json

    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # missing or damaged: the reader that follows names it
    if not isinstance(manifest, dict) or manifest.get("status") != "running":
        return False
    manifest["status"] = "crashed"
    manifest["error"] = DEAD_WRITER
    atomic_write_json(path, manifest)
    return True
