"""Data-parallel decode within a cell: worker processes, each single-threaded with its own copy of the model.

Why processes and one thread each: one torch thread is the only count measured batch-invariant
(harness.core.threads), so a cell used one core however many the machine has. N workers decode
the cell's batches, dealt as they become free (harness.run.dispatch; worker 0 on a thread of this process,
harness.run.workers_inline; what a worker holds: harness.run.worker_host); a row's result does not depend on its batch mates (rows
batching, harness.decode.rows, and the fixed linear chunking, harness.decode.invariant), so the
merged outputs are the ones one worker gives (tests/run/test_workers.py compares the tables).

Why ``spawn``: forking a process after torch has started its thread pools can deadlock the child.
Each worker imports torch and loads the weights itself (the startup cost; recorded per cell).

A worker that dies (crash, OOM kill) is noticed through its process sentinel: the call raises
:class:`WorkerDied` naming the worker and its exit code, the cell fails with that reason and the run
goes on (harness.run.cell); nothing waits forever.
"""

from __future__ import annotations

import pickle
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from harness.decode.greedy import DecodeRequest, plan_batches
from harness.run.worker_host import Key, WorkerHost, rss_mb, worker_state  # noqa: F401 - the workers' API


READY = "__stabprobe_worker_ready__"
"""What :meth:`Pool._answer` gives for a worker that finished starting or binding (no call's result)."""


class WorkerDied(RuntimeError):
    """A decode worker ended without answering (crash, OOM kill); the message names it and its exit code."""


def one_worker_order(reqs: Sequence[DecodeRequest], batch_size: int, batching: str) -> list[Key]:
    """The order one worker returns ``reqs`` in (its batch plan, flattened): merged outputs are put back in it, so
    every table and every later batched step (the traces) sees the same sequence as with one worker."""
    return [(r.prompt_key, r.replicate) for b in plan_batches(reqs, batch_size, batching) for r in b]


def default_workers() -> int:
    """As many workers as the cores this process may use (its affinity mask, harness.core.threads)."""
    from harness.core.threads import available_cpus

    return available_cpus()


def _serve(conn) -> None:
    """A worker process: one torch thread; calls until None."""
    try:
        host = WorkerHost()
    except BaseException as exc:  # noqa: BLE001 - sent to the cell, which records it
        conn.send(("raise", _portable(exc), None))
        return
    conn.send(("ok", None, worker_state(None)))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        method, args = msg
        try:
            result, state = host.call(method, args, lambda k: conn.send(("progress", k, None)))
            conn.send(("ok", result, state))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("raise", _portable(exc), worker_state(host.loaded)))


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (NonFiniteOutput keeps its cell status), else a one-line copy."""
    from harness.errors import error_line

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(error_line(exc))


def _death(proc) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = ": out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


@contextmanager
def _script_not_rerun():
    """Start workers without running the caller's script again in them.

    A ``spawn`` child imports the parent's ``__main__`` from its path; a script that calls the library without an
    ``if __name__ == "__main__":`` guard would then run again in every worker (whole runs, more workers). The
    workers need nothing of it (harness.run.workers is their entry point); a loader must therefore be importable
    from a module (as for Ray), not defined in the script itself.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = path is not None and getattr(getattr(main, "__spec__", None), "name", None) is None
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


class Pool:
    """What every pool of decode workers shares: one call per worker (:meth:`run`), or calls dealt to the workers
    as they become free (:meth:`serve`); a pool answers :meth:`_send` and :meth:`_answer` for the latter."""

    n: int

    def run(self, calls: Sequence[tuple[str, tuple] | None], progress: Callable[[int], None] | None = None) -> list:
        raise NotImplementedError

    def _send(self, i: int, call: tuple[str, tuple]) -> None:
        raise NotImplementedError

    def _answer(self, busy: set[int]) -> tuple[int, bool, Any]:
        """(worker, ok, its result or the exception it raised) of the first busy worker to answer."""
        raise NotImplementedError

    def serve(self, next_call: Callable[[int, bool], tuple[str, tuple] | None],
              on_result: Callable[[int, Any], None], more: Callable[[], bool] = lambda: True) -> None:
        """Calls dealt as workers become free: ``next_call(worker, force)`` gives a free worker its next call (None:
        none for it now; ``force`` when every worker is free, none got one and none is starting),
        ``on_result(worker, result)`` takes each answer; ``more()``: whether anything is left to deal (a worker
        still starting is waited for only then). An error is raised once every call already sent has answered
        (no answer is left in a pipe)."""
        starting = self._starting()
        t0 = time.perf_counter()
        idle, busy, error = [i for i in range(self.n) if i not in starting], set(starting), None
        while True:
            if error is None:
                for i in list(idle):
                    call = next_call(i, False)
                    if call is not None:
                        self._send(i, call)
                        idle.remove(i)
                        busy.add(i)
                if busy <= starting and not starting and idle:
                    call = next_call(idle[0], True)
                    if call is not None:
                        self._send(idle[0], call)
                        busy.add(idle.pop(0))
            if busy <= starting and (not starting or error is not None or not more()):
                break  # no call outstanding; a worker still starting answers before its next call
            i, ok, value = self._answer(busy)
            busy.discard(i)
            if value is READY and ok:
                starting.discard(i)
                if not starting:  # the time the cell decoded short of a worker (imports, weights)
                    self.short_seconds += time.perf_counter() - t0
            else:
                starting.discard(i)  # an error from a starting worker: it is owed no more here
            idle.append(i)
            if not ok:
                error = error or value
            elif error is None and value is not READY:
                on_result(i, value)
        if starting:
            self.short_seconds += time.perf_counter() - t0
        if error is not None:
            raise error

    short_seconds: float = 0.0
    """Seconds this pool's dealing ran while a worker was still starting or binding (it joined when ready)."""

    def _starting(self) -> set[int]:
        """Workers still starting or binding, which :meth:`serve` deals to once they answer :data:`READY`; a pool
        that cannot deal around them waits for them here and answers none."""
        self.wait_ready()
        return set()

    def wait_ready(self) -> None:
        """Until every worker can take a call (a local pool started without waiting imports meanwhile)."""

    bound: tuple[str, str] | None = None
    """(model, variant) every worker holds now."""

    def bind(self, entry, variant: str, loader: Callable) -> float:
        """Every worker loads (entry, variant) and its weights, in parallel (unless bound to it already: a pool
        started for the run's first cell); returns the seconds it took."""
        t = time.perf_counter()
        if self.bound != (entry.name, variant):
            self.bound = None
            self.run([("bind", (entry, variant, loader))] * self.n)
            self.bound = (entry.name, variant)
        return round(time.perf_counter() - t, 3)


class LocalPool(Pool):
    """``n`` worker processes (spawn context), kept for the whole run; :meth:`bind` gives them a cell's model and
    :meth:`run` sends one call per worker."""

    kind = "local"
    broken = False

    def __init__(self, n: int, wait: bool = True, inline: bool | None = None, first: tuple | None = None) -> None:
        """Spawn ``n`` workers; ``wait``: until each has imported torch and the decoder, else at the first call
        (a pool started early imports while the run starts, loads and audits its first cell). ``inline``: worker 0
        on a thread of this process (harness.run.workers_inline); None: decided when the pool is first waited for,
        when this process runs one torch thread (a pool started before the run's thread policy is in force:
        this process need not have imported torch yet). ``first``: (entry, variant, loader) of the run's first
        cell, bound as soon as each worker has started (the weights load while the run audits; :meth:`bind` of the
        same model then waits only for what is left)."""
        self.n, self.procs, self.conns = n, [None] * n, [None] * n
        self.inline = inline
        self.startup_seconds = 0.0
        self.bound: tuple[str, str] | None = None
        self.states: list[dict] = [{} for _ in range(n)]
        self.cpu_at_bind: list[float | None] = [None] * n
        self._pending = [0] * n  # answers owed before any call's: the startup's, then each bind's
        self._first = first
        try:
            if inline is True:
                self._start(0, inline=True)
            for i in range(1, n) if inline is not False else range(n):
                self._start(i, inline=False)
        except BaseException:
            self.close()
            raise
        if first is not None:
            self.bound = (first[0].name, first[1])
        if wait:
            self.wait_ready()

    def _start(self, i: int, inline: bool) -> None:
        if inline:
            from harness.run.workers_inline import InlineWorker

            self.procs[i] = self.conns[i] = InlineWorker()
        else:
            import multiprocessing as mp

            parent, child = mp.get_context("spawn").Pipe()
            p = mp.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
            with _script_not_rerun():
                p.start()
            child.close()
            self.procs[i], self.conns[i] = p, parent
        self._pending[i] += 1
        if self._first is not None:
            self.conns[i].send(("bind", self._first))  # answered after the startup's "ready"
            self._pending[i] += 1

    def _ensure_started(self) -> None:
        if self.procs and self.procs[0] is None:
            import torch

            self.inline = torch.get_num_threads() == 1  # the run's thread policy is in force by now
            self._start(0, self.inline)

    def _starting(self) -> set[int]:
        self._ensure_started()
        return {i for i in range(self.n) if self._pending[i]}

    @property
    def ready(self) -> bool:
        return self.procs[0] is not None and not any(self._pending)

    def wait_ready(self) -> None:
        """Until every worker has imported torch and the decoder and bound its model; ``startup_seconds``: the time
        waited here (dealing, :meth:`serve`, does not wait: a worker joins when ready)."""
        if self.ready:
            return
        t = time.perf_counter()
        try:
            self._ensure_started()
            waiting, error = {i for i in range(self.n) if self._pending[i]}, None
            while waiting:
                i, ok, value = self._answer(waiting)
                if not ok:
                    error = error or value
                    waiting.discard(i)
                elif value is READY:
                    waiting.discard(i)
            if error is not None:
                raise error
        except BaseException:
            self.close()
            raise
        self.startup_seconds = round(self.startup_seconds + time.perf_counter() - t, 3)

    def bind(self, entry, variant: str, loader: Callable) -> float:
        """Every worker loads (entry, variant) and its weights, without waiting: each answers before its next call,
        so :meth:`serve` deals to a worker once it has bound (the others decode meanwhile). Returns 0.0."""
        if self.bound != (entry.name, variant):
            self._ensure_started()
            for i in range(self.n):
                self.conns[i].send(("bind", (entry, variant, loader)))
                self._pending[i] += 1
            self.bound = (entry.name, variant)
        return 0.0

    def run(self, calls: Sequence[tuple[str, tuple] | None], progress: Callable[[int], None] | None = None) -> list:
        """One call (method, args) per worker (None: that worker idles); the results in worker order."""
        self.wait_ready()
        busy = [i for i, c in enumerate(calls) if c is not None]
        for i in busy:
            self.conns[i].send(calls[i])
        return self._collect(busy, progress)

    def _send(self, i: int, call: tuple[str, tuple]) -> None:
        self.conns[i].send(call)

    def _collect(self, busy: list[int], progress) -> list:
        results: list[Any] = [None] * self.n
        waiting, error = set(busy), None
        while waiting:
            i, ok, value = self._answer(waiting, progress)
            waiting.discard(i)
            if not ok:
                error = error or value
            else:
                results[i] = value
        if error is not None:
            raise error
        return results

    def _answer(self, busy: set[int], progress=None) -> tuple[int, bool, Any]:
        from multiprocessing.connection import wait

        while True:
            ready = wait([self.conns[i] for i in busy] + [self.procs[i].sentinel for i in busy])
            for i in sorted(busy):
                conn, proc = self.conns[i], self.procs[i]
                if conn in ready or conn.poll():
                    try:
                        kind, value, state = conn.recv()
                    except (EOFError, OSError):
                        proc.join(5)
                        raise WorkerDied(f"decode worker {i + 1} of {self.n} died ({_death(proc)})") from None
                    if kind == "progress":
                        if progress:
                            progress(value)
                        continue
                    if state:
                        self.states[i] = state
                    if self._pending[i]:  # a startup's or a bind's answer
                        self._pending[i] -= 1
                        if kind == "raise":
                            self.broken = True  # its pending answers are not to be trusted: the cell drops the pool
                            return i, False, value
                        self.cpu_at_bind[i] = (state or {}).get("cpu_s")
                        if self._pending[i]:
                            continue
                        return i, True, READY
                    return i, kind != "raise", value
                if proc.sentinel in ready:
                    proc.join(5)
                    raise WorkerDied(f"decode worker {i + 1} of {self.n} died ({_death(proc)})")

    def close(self) -> None:
        conns, procs = [c for c in self.conns if c is not None], [p for p in self.procs if p is not None]
        for conn in conns:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for conn in conns:
            conn.close()
        self.procs, self.conns = [], []
