"""Worker 0 of a local pool, run in the cell's own process on a thread of its own (harness.run.workers.LocalPool).

Why: a spawned worker imports torch, transformers and the model's code before its first batch (~3 s of CPU for
the demo model, measured). On a 2-core machine two spawned workers cost 2 x that on cores the run's own
process needs for loading and auditing the first cell, while this process has everything imported already and
sits idle waiting for the workers. With worker 0 here, N workers start N - 1 processes: on the demo model with
the task ladder at L = 32 (2 workers, the pool started early) the wait for the pool went from 1.9 s to ~0 s.

What stays the same: worker 0 holds its own copy of the model (bound with the run's loader, like the others),
runs the same calls through the same :class:`~harness.run.workers.WorkerHost`, with one torch thread (used only
when this process runs one torch thread, harness.core.threads: a thread inherits the process's count), so its
outputs are the bits of a spawned worker's (tests/run/test_workers.py compares the tables with one worker).
It answers through the same interface as a pipe (``send``/``poll``/``recv``, a file descriptor for ``wait``),
so the pool deals to it like to the others. It cannot die alone: a crash there is this process's.
"""

from __future__ import annotations

import collections
import os
import queue
import threading


class InlineWorker:
    """A worker on a thread of this process, behind a pipe's interface (``fileno`` becomes readable per answer)."""

    exitcode = None

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self._never_r, self._never_w = os.pipe()  # a sentinel that never fires: this worker has no process to die
        self.sentinel = self._never_r
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: collections.deque = collections.deque()
        self._thread = threading.Thread(target=self._loop, name="stabprobe-decode-worker-0", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from harness.run.worker_host import WorkerHost, worker_state

        try:
            host = WorkerHost(inline=True)
        except BaseException as exc:  # noqa: BLE001 - sent to the cell, which records it
            self._post(("raise", exc, None))
            return
        self._post(("ok", None, worker_state(None, inline=True)))
        while True:
            msg = self._inbox.get()
            if msg is None:
                return
            method, args = msg
            try:
                result, state = host.call(method, args)
                self._post(("ok", result, state))
            except BaseException as exc:  # noqa: BLE001
                self._post(("raise", exc, worker_state(host.loaded, inline=True)))

    def _post(self, msg) -> None:
        self._outbox.append(msg)
        os.write(self._w, b"x")

    # -- the pipe's interface (multiprocessing.connection.Connection) ---------------------------------------

    def send(self, msg) -> None:
        self._inbox.put(msg)

    def fileno(self) -> int:
        return self._r

    def poll(self) -> bool:
        return bool(self._outbox)

    def recv(self):
        os.read(self._r, 1)
        return self._outbox.popleft()

    def close(self) -> None:
        """Ends the thread after its current call (a cell that failed elsewhere waits for it: its model is freed)."""
        self._inbox.put(None)
        self._thread.join()
        for fd in (self._r, self._w, self._never_r, self._never_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- what the pool asks of a process -----------------------------------------------------------------------

    def join(self, timeout=None) -> None:
        pass

    def is_alive(self) -> bool:
        return False
