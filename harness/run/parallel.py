"""A cell's decode work, on one worker (this process) or split over N (harness.run.workers), behind one interface.

The cell (harness.run.cell) asks for four things: decode some requests, decode some again (traces wanted
that a cached output lacks), the prompt-end rows of some, and the traces at the steps the pairs read.
:class:`CellDecoder` decides once, from the first batch of work, how many workers it is worth
(harness.run.worker_memory.workers_for: recorded in cell.json ``workers.chosen``) and keeps to it for the cell:

- one: everything in this process, exactly as before the workers existed;
- N: decode and prompt ends in batches dealt to the workers as they become free (harness.run.dispatch),
  merged back into the order one worker returns them (:func:`~harness.run.workers.one_worker_order`);
  each output's states stay in the worker that decoded it, which fills its traces at the steps the pairs
  read (only the values come back). A state's traces do not depend on the states filled with it (fixed
  chunks, harness.decode.traces), so the bits are those of one fill over the whole cell.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from harness.decode.engines import decode_with_engine
from harness.decode.greedy import DecodeRequest
from harness.run.complete import one_token_prompt_ends
from harness.run.worker_memory import weights_bytes, workers_for
from harness.run.workers import one_worker_order

PARALLEL_ENGINES = ("hf",)
"""Engines whose decode splits over workers; others (vLLM, llama.cpp: their own thread pools) decode in this process."""


@dataclasses.dataclass(frozen=True)
class HeldBy:
    """In place of an output's states in this process: they stay in decode worker ``worker`` (0-based), which
    fills the output's traces (:meth:`CellDecoder.fill`); harness.run.complete reads only that states exist."""

    worker: int


class CellDecoder:
    """The decode work of one cell; :meth:`close` releases the workers (always call it)."""

    def __init__(self, loaded, settings, engine: str, capture: str, entry, variant: str, loader: Callable | None) -> None:
        self.loaded, self.s, self.engine, self.capture = loaded, settings, engine, capture
        self.entry, self.variant, self.loader = entry, variant, loader
        self.pool = None
        self.n: int | None = None  # decided by the first call
        self._last_states: list[dict] = []
        self._kind, self._startup, self._bind = "local", 0.0, 0.0
        self._why: str | None = None
        self._cpu0: list[float] = []
        self._cpu_at_bind: list = []
        self._short0 = self._short1 = 0.0

    # -- the four things the cell asks for ----------------------------------------------------------------

    def decode(self, reqs: Sequence[DecodeRequest], progress=None):
        """(generations in one worker's order; how the engine ran). Split: each output's states stay in the
        worker that decoded it (``states`` is a :class:`HeldBy` naming it) until :meth:`fill`."""
        if not self._split(len(reqs)):
            return decode_with_engine(self.loaded, reqs, max(self.s.lengths), self.s.lengths, self.s.batch_size,
                                      progress, self.s.batching, self.engine, self.s.capture, traces="deferred")
        t = time.perf_counter()
        args = (max(self.s.lengths), self.s.lengths, self.s.batch_size, self._batching(), self.engine, self.s.capture)
        gens, runs = [], []

        def take(w, value):
            out, run, held = value
            gens.extend(dataclasses.replace(g, states=HeldBy(w)) if (g.prompt_key, g.replicate) in held else g
                        for g in out)
            runs.append(run)
            if progress:
                progress(len(out))

        self._deal("decode", reqs, args, take)
        self._sync()
        run = dataclasses.replace(runs[0], decode_seconds=round(time.perf_counter() - t, 3),
                                  generated_tokens=int(sum(r.generated_tokens for r in runs)),
                                  load_seconds=max(r.load_seconds for r in runs),
                                  batch_invariant=all(r.batch_invariant for r in runs))
        return self._merged(gens, reqs), run

    def redecode(self, reqs: list[DecodeRequest]):
        return self.decode(reqs)[0]

    def prompt_ends(self, reqs: list[DecodeRequest]):
        if self.capture != "generate":
            return self.redecode(reqs)  # the probe's prompt-end row depends on the pass: the whole probe again
        if not self._split(len(reqs)):
            return one_token_prompt_ends(self.loaded, self.s.batch_size, self.s.batching)(reqs)
        gens: list = []
        self._deal("prompt_ends", reqs, (self.s.batch_size, self._batching()), lambda w, out: gens.extend(out))
        self._sync()
        return self._merged(gens, reqs)

    def fill(self, gens, want):
        """Traces at the wanted steps, each worker filling the outputs whose states it holds (only the values
        cross the pipe; harness.decode.traces fills in fixed-size chunks, so the bits are those of one fill over
        the cell); every held state is dropped. None when this process holds the model (harness.run.complete
        fills them)."""
        if not self.n or self.n == 1:
            return None
        head_ok = all((st.get("head_check") or {}).get("ok", True) for st in self.pool.states)
        asks: list[dict] = [{} for _ in range(self.n)]
        for g in gens:
            if isinstance(g.states, HeldBy):
                k = (g.prompt_key, g.replicate)
                asks[g.states.worker][k] = sorted(want.get(k, ()))
        answers = self._run([("fill_held", (a, head_ok)) for a in asks])
        self._sync()  # the head's status as the traces found it
        fields = {k: v for a in answers for k, v in a.items()}
        return [g if g.states is None else dataclasses.replace(g, states=None, **fields.get((g.prompt_key, g.replicate), {}))
                for g in gens]

    # -- what the cell record reads ---------------------------------------------------------------------------

    @property
    def weights_loaded(self) -> bool:
        return self.loaded.weights_loaded or any(st.get("weights_loaded") for st in self._states())

    def record(self) -> dict[str, Any] | None:
        """cell.json's ``workers``: how many, their startup (spawn, imports, weights) and peak RSS; None: one, here."""
        if not self.n or self.n == 1:
            return None if self._why is None else {"count": 1, "chosen": self._why}
        # A local pool binds without waiting: CPU seconds count from each worker's bind, the start from the waits
        # and the time the decode ran short of a worker still starting or binding.
        c0 = [b if b is not None else c for b, c in zip(self._cpu_at_bind, self._cpu0)] if self._cpu_at_bind else self._cpu0
        cpu = [round(st.get("cpu_s", 0.0) - c, 3) for st, c in zip(self._states(), c0)]
        startup = round(self._startup + max(0.0, self._short1 - self._short0), 3)
        return {"count": self.n, "pool": self._kind, "startup_seconds": startup, "bind_seconds": self._bind,
                "rss_mib": [st.get("rss_mb", -1.0) for st in self._states()], "cpu_seconds": cpu,
                **({"chosen": self._why} if self._why else {})}

    def third_party_warnings(self) -> dict[str, int]:
        """The warnings each worker process showed once and counted while it served this cell, summed (worker 0 on
        the run's own thread is counted by the cell itself, harness.core.noise)."""
        total: dict[str, int] = {}
        for st in self._states():
            for k, n in (st.get("third_party_warnings") or {}).items():
                total[k] = total.get(k, 0) + int(n)
        return total

    def close(self) -> None:
        """Done with the workers for this cell (they stay up for the next cell; a broken pool is closed)."""
        if self.pool is not None:
            self._last_states = list(self.pool.states)
            self._cpu_at_bind = list(getattr(self.pool, "cpu_at_bind", []))
            self._short1 = self.pool.short_seconds + getattr(self.pool, "startup_seconds", 0.0)
            self.pool = None

    # -- internals ----------------------------------------------------------------------------------------

    def _split(self, todo: int) -> bool:
        if self.n is None:
            parallel = self.engine in PARALLEL_ENGINES and self.loader is not None
            mib = weights_bytes(self.entry, self.variant) / 2**20 if self.entry is not None else 0.0
            self.n, self._why = workers_for(self.s.workers, todo, self.s.auto_workers, mib) if parallel else (1, None)
            if self.s.workers is None and self.s.auto_workers <= 1:
                self._why = None  # one was the run's default: nothing was decided here
            if self.n > 1 and not _picklable(self.loader):
                if self.s.workers is not None:
                    raise RuntimeError(f"--workers {self.s.workers}: the run's loader ({self.loader!r}) cannot be sent "
                                       "to a worker process (define it at module level), or use --workers 1")
                self.n = 1  # the default: this process decodes, as it can
                self._why = f"{self._why}; but the run's loader cannot be sent to a worker process: 1"
            if self.n > 1:
                self.pool, self._startup = run_pool(self.s.worker_pool, self.n)
                self._kind = self.pool.kind
                try:
                    self._bind = self.pool.bind(self.entry, self.variant, self.loader)
                    self._cpu0 = [st.get("cpu_s", 0.0) for st in self.pool.states]
                    self._short0 = self.pool.short_seconds + getattr(self.pool, "startup_seconds", 0.0)
                except BaseException:
                    drop_pool(self.pool)
                    raise
        return self.n > 1

    def _batching(self) -> str:
        return "bucket" if self.loaded.rows_unsupported else self.s.batching  # as decode_all does

    def _deal(self, method: str, reqs, args: tuple, take: Callable) -> None:
        """``method`` on batches of ``reqs`` dealt to the workers as they become free (harness.run.dispatch)."""
        from harness.run.dispatch import Dealer

        dealer = Dealer(reqs, self.n, self.s.batch_size, self._batching())

        def next_call(w: int, force: bool):
            batch = dealer.next_for(w, force)
            return None if batch is None else (method, (batch, *args))

        self._guarded(lambda: self.pool.serve(next_call, take, lambda: not dealer.done))
        if not dealer.done:
            raise RuntimeError(f"decode workers: {len(dealer.copies)} requests were never dealt")

    def _run(self, calls, progress=None):
        return self._guarded(lambda: self.pool.run(calls, progress))

    def _guarded(self, work):
        from harness.run.workers import WorkerDied

        try:
            return work()
        except WorkerDied:
            drop_pool(self.pool)  # the others may be mid-call: the next cell starts a fresh pool
            raise
        except BaseException:
            if getattr(self.pool, "broken", False):  # a worker failed to start or bind: its answers are owed
                drop_pool(self.pool)
            raise

    def _states(self) -> list[dict]:
        return self.pool.states if self.pool is not None else self._last_states

    def _merged(self, gens, reqs):
        by = {(g.prompt_key, g.replicate): g for g in gens}
        used = self.loaded.batching_used or self.s.batching
        return [by[k] for k in one_worker_order(reqs, self.s.batch_size, used)]

    def _sync(self) -> None:
        """The workers' findings onto this process's (weightless) model, where the cell record reads them."""
        states, lo = self._states(), self.loaded
        lo.batching_used = next((st["batching_used"] for st in states if st.get("batching_used")), lo.batching_used)
        lo.rows_unsupported = next((st["rows_unsupported"] for st in states if st.get("rows_unsupported")), None)
        lo.linear_invariance = next((st["linear_invariance"] for st in states if st.get("linear_invariance")), None)
        checks = [st["head_check"] for st in states if st.get("head_check")]
        if checks:
            # One check per worker (each on its own first batch): the worst deviation, ok only when all are.
            lo.head_check = {"max_rel_dev": max(c["max_rel_dev"] for c in checks), "tolerance": checks[0]["tolerance"],
                             "rows": int(sum(c["rows"] for c in checks)), "ok": all(c["ok"] for c in checks)}
        status = [st["stability_status"] for st in states if st.get("stability_status")]
        lo.stability_status = next((x for x in status if x != "ok"), status[0] if status else lo.stability_status)
        lo.weights_seconds = max([st.get("weights_seconds", 0.0) for st in states] + [lo.weights_seconds])


def _picklable(obj) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - lambdas, closures, local functions
        return False


_POOLS: dict[tuple[str, int], Any] = {}
"""The run's worker pools by (kind, size): started by the first cell that splits, reused by the next ones (the
interpreter and torch import once per run; each cell binds its own model), closed by :func:`close_pools`."""


def run_pool(kind: str, n: int):
    """(the pool of ``n`` workers of ``kind``, the seconds waited for its start: 0.0 when it was already up, or is
    a local pool, which deals to each worker once it has started: harness.run.workers.LocalPool)."""
    pool = _POOLS.get((kind, n))
    if pool is not None:
        return pool, 0.0
    if kind == "ray":
        from harness.run.workers_ray import RayPool

        pool = RayPool(n)
    else:
        from harness.run.workers import LocalPool

        pool = LocalPool(n, wait=False)
    _POOLS[(kind, n)] = pool
    return pool, pool.startup_seconds


def prestart_pool(n: int, first: tuple | None = None, wait: bool = False) -> None:
    """Spawn ``n`` local workers now: they import torch (and bind ``first``, the run's first cell's (entry, variant,
    loader), when given) while the run loads its embedder and audits the first cell. ``wait``: return only once
    every worker is up and bound (a caller timing the decode in steady state, e.g. benchmarks/bench_workers.py)."""
    if n > 1 and ("local", n) not in _POOLS:
        from harness.run.workers import LocalPool

        _POOLS[("local", n)] = LocalPool(n, wait=False, first=first if first and _picklable(first[2]) else None)
    if wait and ("local", n) in _POOLS:
        _POOLS[("local", n)].wait_ready()


def drop_pool(pool) -> None:
    for key, p in list(_POOLS.items()):
        if p is pool:
            del _POOLS[key]
    pool.close()


def close_pools() -> None:
    """End every worker of this process's pools (the run's cells are done)."""
    for pool in list(_POOLS.values()):
        drop_pool(pool)
