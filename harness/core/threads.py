"""torch's CPU thread count: how many this process may use, and a block that runs with a given count.

Why one place: the decode runs with ``--threads`` (one by default: bf16 GEMMs
split work by batch size across threads, harness.decode.greedy), while other
stages (the MiniLM embedder, the demo trainer) pick their own count for their
own reasons; each must leave the count it found.
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
