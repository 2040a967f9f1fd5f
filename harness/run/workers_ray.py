"""The within-cell split on Ray: one actor per worker (one CPU, one torch thread, its own copy of the model).

Same calls and the same split as the local processes (harness.run.workers), so one cell's prompts spread
over a cluster's nodes with the tables of one worker. An actor that dies (node lost, OOM kill) raises
:class:`~harness.run.workers.WorkerDied` for the cell; actors are never restarted (a restarted one would
have lost the states it holds).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from harness.run.workers import Pool, WorkerDied, WorkerHost


class RayPool(Pool):
    """``n`` Ray actors holding one (model, variant); :meth:`run` sends one call per worker."""

    kind = "ray"

    def __init__(self, n: int) -> None:
        import ray

        t = time.perf_counter()
        self.n = n
        self.states: list[dict] = [{} for _ in range(n)]
        actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(WorkerHost)
        self.actors = [actor.remote() for _ in range(n)]
        try:
            ray.get([a.__ray_ready__.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise
        self.startup_seconds = round(time.perf_counter() - t, 3)
        self._refs: dict = {}

    def run(self, calls: Sequence[tuple[str, tuple] | None], progress: Callable[[int], None] | None = None) -> list:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        refs = {i: self.actors[i].call.remote(*c) for i, c in enumerate(calls) if c is not None}
        results: list = [None] * self.n
        error = None
        for i, ref in refs.items():
            try:
                value, state = ray.get(ref)
            except RayActorError as exc:
                raise WorkerDied(f"decode worker {i + 1} of {self.n} (Ray actor) died: {str(exc).splitlines()[0]}") from None
            except RayTaskError as exc:
                error = error or (exc.cause if isinstance(exc.cause, BaseException) else RuntimeError(str(exc)))
                continue
            self.states[i] = state
            results[i] = value
            if progress and calls[i][0] in ("decode", "prompt_ends"):
                progress(len(calls[i][1][0]))
        if error is not None:
            raise error
        return results

    def _send(self, i: int, call: tuple[str, tuple]) -> None:
        self._refs[i] = self.actors[i].call.remote(*call)

    def _answer(self, busy: set[int]) -> tuple[int, bool, object]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        by_ref = {self._refs[i]: i for i in busy}
        (ref,), _ = ray.wait(list(by_ref), num_returns=1)
        i = by_ref[ref]
        del self._refs[i]
        try:
            value, state = ray.get(ref)
        except RayActorError as exc:
            raise WorkerDied(f"decode worker {i + 1} of {self.n} (Ray actor) died: {str(exc).splitlines()[0]}") from None
        except RayTaskError as exc:
            return i, False, exc.cause if isinstance(exc.cause, BaseException) else RuntimeError(str(exc))
        self.states[i] = state
        return i, True, value

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
