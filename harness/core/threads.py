"""torch's CPU thread count: how many this process may use, and a block that runs with a given count.

Why one place: the decode runs with ``threads`` (``--threads``; one by default
on CPU, :func:`policy_threads`), set by every library entry point through
:func:`thread_policy` so the CLI and the Python API agree, while other stages
(the MiniLM embedder, the demo trainer) pick their own count for their own
reasons; each must leave the count it found.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what Slurm or a container grants, else the machine's),
    at most ``OMP_NUM_THREADS`` when set (a Ray worker's share, harness.run.executor_ray)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, the previous count restored after (also on error)."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def policy_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """The decode's thread count under the project's policy: ``threads`` when given (positive), else 1 on a
    CPU-only machine, else None (CUDA: torch's own count is left alone, the GPU does the arithmetic).

    Determinism before speed: on a 2-core Intel Xeon, 2 threads split bf16 GEMMs by batch size, so the
    identical rung's two decodes (different batches) differed (hidden 5e-6, JS 7e-18, 2 of 151,669
    log-probabilities at a real vocabulary); 1 thread was bit-exact.
    """
    from harness.errors import InputError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0):
        raise InputError(flag, str(threads), "expected a positive integer")
    if threads is not None:
        return threads
    import torch

    return None if torch.cuda.is_available() else 1


@contextmanager
def thread_policy(threads: int | None, flag: str = "--threads") -> Iterator[None]:
    """Every library entry point (run, resume, merge, gate, geometry, stretch, floor) runs inside this block, so
    the CLI and a Python caller get the same count (:func:`policy_threads`); the caller's count is restored after."""
    n = policy_threads(threads, flag)
    if n is None:
        yield
        return
    with torch_threads(n):
        yield
