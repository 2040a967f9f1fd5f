"""Data-parallel decode within a cell: worker processes, each single-threaded with its own copy of the model.

Why processes and one thread each: one torch thread is the only count measured batch-invariant
(harness.core.threads), so a cell used one core however many the machine has. N workers decode
N disjoint parts of the cell's requests; a row's result does not depend on its batch mates (rows
batching, harness.decode.rows, and the fixed linear chunking, harness.decode.invariant), so the
merged outputs are the ones one worker gives (tests/run/test_workers.py compares the tables).

Why ``spawn``: forking a process after torch has started its thread pools can deadlock the child.
Each worker imports torch and loads the weights itself (the startup cost; recorded per cell).

A worker that dies (crash, OOM kill) is noticed through its process sentinel: the call raises
:class:`WorkerDied` naming the worker and its exit code, the cell fails with that reason and the run
goes on (harness.run.cell); nothing waits forever.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from harness.decode.greedy import DecodeRequest, plan_batches

MIN_REQUESTS_PER_WORKER = 16
"""With the default worker count, a cell decodes with at most one worker per this many requests: starting a worker
(torch import, weights) costs seconds, more than a handful of prompts take on one core."""

Key = tuple[str, int]


class WorkerDied(RuntimeError):
    """A decode worker ended without answering (crash, OOM kill); the message names it and its exit code."""


def split_requests(reqs: Sequence[DecodeRequest], n: int) -> list[list[DecodeRequest]]:
    """The requests in ``n`` parts, fixed by the requests alone: originals (replicate 0) sorted by (length, key) and
    dealt round-robin (so every part gets short and long prompts); a second copy (the identical rung's replicate 1)
    goes to the worker after its original's, so the two decodes never share a process (nor a batch) when n > 1."""
    parts: list[list[DecodeRequest]] = [[] for _ in range(n)]
    where: dict[str, int] = {}
    order = sorted(reqs, key=lambda r: (r.replicate, len(r.token_ids), r.prompt_key))
    dealt = 0
    for r in order:
        if r.replicate != 0 and r.prompt_key in where:
            i = (where[r.prompt_key] + r.replicate) % n
        else:
            i = dealt % n
            dealt += 1
        where.setdefault(r.prompt_key, i)
        parts[i].append(r)
    return parts


def one_worker_order(reqs: Sequence[DecodeRequest], batch_size: int, batching: str) -> list[Key]:
    """The order one worker returns ``reqs`` in (its batch plan, flattened): merged outputs are put back in it, so
    every table and every later batched step (the traces) sees the same sequence as with one worker."""
    return [(r.prompt_key, r.replicate) for b in plan_batches(reqs, batch_size, batching) for r in b]


def default_workers() -> int:
    """As many workers as the cores this process may use (its affinity mask, harness.core.threads)."""
    from harness.core.threads import available_cpus

    return available_cpus()


def workers_for(requested: int | None, todo: int, auto: int) -> int:
    """Workers a cell uses for ``todo`` requests: ``requested`` when given (never more than the requests), else
    ``auto`` (the run's default) capped at one per :data:`MIN_REQUESTS_PER_WORKER` requests."""
    if requested is not None:
        return max(1, min(requested, todo))
    return max(1, min(auto, todo // MIN_REQUESTS_PER_WORKER))


def rss_mb() -> float:
    """Peak resident memory of this process in MiB: VmHWM (ru_maxrss would count the parent's peak too, since
    Linux keeps it across the fork and exec that start a worker)."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# -- what a worker does (the same functions serve the local processes and the Ray actors) ----------------------


def worker_state(loaded) -> dict[str, Any]:
    """What the worker learnt about the model that the cell record reports (harness.run.cell copies it)."""
    if loaded is None:
        return {"rss_mb": rss_mb(), "pid": os.getpid(), "cpu_s": time.process_time()}
    return {"cpu_s": time.process_time(),"batching_used": loaded.batching_used, "rows_unsupported": loaded.rows_unsupported,
            "linear_invariance": loaded.linear_invariance, "head_check": loaded.head_check,
            "stability_status": loaded.stability_status, "weights_seconds": loaded.weights_seconds,
            "weights_loaded": loaded.weights_loaded, "rss_mb": rss_mb(), "pid": os.getpid()}


def do_decode(loaded, reqs, max_new_tokens, lengths, batch_size, batching, engine, capture, progress=None):
    from harness.decode.engines import decode_with_engine

    return decode_with_engine(loaded, reqs, max_new_tokens, lengths, batch_size, progress, batching, engine, capture,
                              traces="deferred")


def do_prompt_ends(loaded, reqs, batch_size, batching, progress=None):
    from harness.run.complete import one_token_prompt_ends

    return one_token_prompt_ends(loaded, batch_size, batching)(reqs)


def do_fill(loaded, gens, want, head_ok):
    from harness.decode.traces import drop_states, fill_traces

    if head_ok is False and loaded.head_check is not None:
        loaded.head_check = {**loaded.head_check, "ok": False}  # another worker's check failed: no traces anywhere
    return drop_states(fill_traces(loaded, gens, want))


METHODS: dict[str, Callable] = {"decode": do_decode, "prompt_ends": do_prompt_ends, "fill": do_fill}


class WorkerHost:
    """What one worker holds between calls: the (model, variant) of the cell it serves now (``bind``)."""

    def __init__(self) -> None:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        import harness.decode.engines  # noqa: F401 - the imports are part of the startup, not of the first cell

        torch.set_num_threads(1)  # the only count measured batch-invariant (harness.core.threads)
        self.loaded = None

    def call(self, method: str, args: tuple, progress: Callable | None = None):
        """(result, state): ``bind`` (entry, variant, loader) loads a model and its weights; the others use it."""
        if method == "bind":
            import gc

            self.loaded = None
            gc.collect()  # the previous cell's weights go before the next ones come
            entry, variant, loader = args
            self.loaded = loader(entry, variant)
            _ = self.loaded.model
            return None, worker_state(self.loaded)
        if self.loaded is None:
            raise RuntimeError(f"decode worker asked to {method} before any model was bound")
        kwargs = {"progress": progress} if progress is not None and method in ("decode", "prompt_ends") else {}
        return METHODS[method](self.loaded, *args, **kwargs), worker_state(self.loaded)


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
    """What every pool of decode workers shares; a pool runs one call per worker (:meth:`run`)."""

    n: int

    def run(self, calls: Sequence[tuple[str, tuple] | None], progress: Callable[[int], None] | None = None) -> list:
        raise NotImplementedError

    def bind(self, entry, variant: str, loader: Callable) -> float:
        """Every worker loads (entry, variant) and its weights, in parallel; returns the seconds it took."""
        t = time.perf_counter()
        self.run([("bind", (entry, variant, loader))] * self.n)
        return round(time.perf_counter() - t, 3)


class LocalPool(Pool):
    """``n`` worker processes (spawn context), kept for the whole run; :meth:`bind` gives them a cell's model and
    :meth:`run` sends one call per worker."""

    kind = "local"

    def __init__(self, n: int, wait: bool = True) -> None:
        """Spawn ``n`` workers; ``wait``: until each has imported torch and the decoder, else at the first call
        (a pool started early imports while the run loads and audits its first cell)."""
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.n, self.procs, self.conns, self.ready = n, [], [], False
        self.startup_seconds = 0.0
        self.states: list[dict] = [{} for _ in range(n)]
        try:
            for _ in range(n):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_serve, args=(child,), daemon=True)
                with _script_not_rerun():
                    p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)
        except BaseException:
            self.close()
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until every worker has imported torch and the decoder; ``startup_seconds``: the time waited here."""
        if self.ready:
            return
        t = time.perf_counter()
        try:
            self._collect(list(range(self.n)), None)
        except BaseException:
            self.close()
            raise
        self.ready = True
        self.startup_seconds = round(time.perf_counter() - t, 3)

    def run(self, calls: Sequence[tuple[str, tuple] | None], progress: Callable[[int], None] | None = None) -> list:
        """One call (method, args) per worker (None: that worker idles); the results in worker order."""
        self.wait_ready()
        busy = [i for i, c in enumerate(calls) if c is not None]
        for i in busy:
            self.conns[i].send(calls[i])
        return self._collect(busy, progress)

    def _collect(self, busy: list[int], progress) -> list:
        from multiprocessing.connection import wait

        results: list[Any] = [None] * self.n
        waiting, error = set(busy), None
        while waiting:
            ready = wait([self.conns[i] for i in waiting] + [self.procs[i].sentinel for i in waiting])
            for i in sorted(waiting):
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
                    waiting.discard(i)
                    if state:
                        self.states[i] = state
                    if kind == "raise":
                        error = error or value
                    else:
                        results[i] = value
                elif proc.sentinel in ready:
                    proc.join(5)
                    raise WorkerDied(f"decode worker {i + 1} of {self.n} died ({_death(proc)})")
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
