"""How many decode workers a run gets, and whether that many copies of the model fit in this machine's memory.

Each worker (harness.run.workers) is a process with its own copy of the weights, so N workers cost N times
(interpreter + torch + transformers + weights). The estimate is made before any run directory exists, from
the registry alone (no weights are read): the published parameter count times the variant's bytes per
parameter, else the size of a local model's weight files. An N asked for that would not fit is refused
(exit 2, naming ``--workers``); the default count is capped to what fits. Each cell records what its
workers actually used (cell.json ``workers.rss_mib``).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import InputError

BASE_WORKER_MIB = 1300.0
"""A worker before its weights: Python, torch, transformers and the harness imported, a decode's buffers.
Measured (VmHWM, torch 2.x, transformers 5.x): 228 MiB after the imports, 394 MiB with a demo model bound, 830-1290
MiB at the end of a demo-model cell (cell.json workers.rss_mib; the decode's batches and kept states). Rounded up."""

WORK_FACTOR = 2.0
"""Weights times this: the KV cache, activations and the output head's logits grow with the batch. Measured:
a SmolLM2-135M worker (bf16, 270 MB of weights, 49,152-row head) peaked at 1,769-1,835 MiB on the small task
ladder, 32 tokens: the base and 2.0x the weights."""

MIN_REQUESTS_PER_WORKER = 16
"""With the default worker count, a cell decodes with at most one worker per this many requests: starting a worker
(torch import, weights) costs seconds, more than a handful of prompts take on one core."""

WORK_PER_WORKER = 2048.0
"""With the default worker count, a cell decodes with at most one worker per this much work, counted as its
requests times its weights in MiB (a decode step's cost grows with the weights; the output lengths are not known
before decoding). Why: binding a model in a worker costs 1-3 s even for a tiny one (imports, building the model),
which a split must win back. Measured on the demo model (1.7 MiB, 2-core machine, --no-cache): the default ladder,
351 requests (600 MiB-requests), decodes in ~2 s on one worker and was slower on two (2.1 -> 3.9 s); the task
ladder, 4,081 requests (7,000), gains from two. SmolLM2-135M (257 MiB) reaches it from 8 requests (two workers
from 32: the cap above)."""

_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "int8": 1.0, "int4": 0.5}
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_params(text: str) -> float | None:
    """'135M' -> 1.35e8, '0.8B' -> 8e8; None when the registry says 'unknown' or something else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmbtKMBT])\s*", text or "")
    return float(m.group(1)) * _SCALE[m.group(2).lower()] if m else None


def weights_bytes(entry, variant: str) -> float:
    """The weights one worker holds for (entry, variant): estimated from the registry (0.0: unknown)."""
    from harness.models.variants import parse_variant

    spec = parse_variant(variant)
    per = _BYTES.get(spec.weights if spec.weights in _BYTES else entry.dtype, 2.0)
    n = parse_params(entry.params)
    if n is not None:
        return n * per
    src = Path(entry.source)
    if src.is_dir():
        return float(sum(p.stat().st_size for p in src.iterdir() if p.suffix in (".safetensors", ".bin")))
    return 0.0


def worker_mib(cfg) -> float:
    """Estimated peak RSS of one worker in MiB: the largest (model, variant) of the run."""
    from harness.run.config import variants_for

    biggest = max((weights_bytes(m, v) for m in cfg.models for v in variants_for(cfg, m)), default=0.0)
    return BASE_WORKER_MIB + WORK_FACTOR * biggest / 2**20


def available_mib() -> float:
    """Memory this process may still take, in MiB: the smaller of MemAvailable and the cgroup's limit less its usage."""
    avail = float("inf")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            lim = Path(limit).read_text().strip()
            if lim.isdigit() and int(lim) < 2**60:
                avail = min(avail, (int(lim) - int(Path(usage).read_text().strip())) / 2**20)
                break
        except (OSError, ValueError):
            continue
    return avail


WORKERS_ENV = "STABPROBE_WORKERS"
"""The default of ``--workers`` when set (like STABPROBE_CACHE for ``--cache``); the test suite sets it to 1."""


def env_workers() -> int | None:
    """``$STABPROBE_WORKERS`` as a count (None: unset); anything but a positive integer is an input error."""
    import os

    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise InputError(WORKERS_ENV, text, "expected a positive integer (the default of --workers)")
    return int(text)


def resolved_workers(cfg) -> int:
    """The workers per cell this run asks for: ``cfg.workers``, else ``$STABPROBE_WORKERS``, else the cores this
    process may use, capped by memory (one with the Ray executor, the cells being the tasks, and with
    ``--threads`` above one)."""
    if cfg.workers is not None:
        return cfg.workers
    if cfg.executor == "ray" or (cfg.threads or 1) > 1:
        return 1  # Ray: the cells are the tasks; --threads N > 1: the decode asked for threads, not processes
    env = env_workers()
    if env is not None:
        return env
    from harness.run.workers import default_workers

    n = default_workers()
    if n > 1 and cfg.models:
        n = max(1, min(n, int(available_mib() // worker_mib(cfg))))
    return n


def workers_for(requested: int | None, todo: int, auto: int, weights_mib: float = 0.0) -> tuple[int, str | None]:
    """(workers a cell uses for ``todo`` requests, why: None when asked for a count). ``requested`` when given
    (never more than the requests); else ``auto`` (the run's default) capped at one per
    :data:`MIN_REQUESTS_PER_WORKER` requests and, where the weights' size is known, at one per
    :data:`WORK_PER_WORKER` MiB-requests."""
    if requested is not None:
        return max(1, min(requested, todo)), None
    n = max(1, min(auto, todo // MIN_REQUESTS_PER_WORKER))
    why = f"default: {auto} (cores), at most one per {MIN_REQUESTS_PER_WORKER} of the cell's {todo} requests"
    if weights_mib > 0:
        work = todo * weights_mib
        n = max(1, min(n, int(work // WORK_PER_WORKER)))
        why += (f" and one per {WORK_PER_WORKER:,.0f} MiB-requests of work ({todo} requests x {weights_mib:,.1f} MiB "
                f"of weights = {work:,.0f})")
    return n, f"{why}: {n}"


def check_workers(cfg) -> None:
    """``--workers`` is a positive integer whose workers fit in memory (exit 2 otherwise, before any directory)."""
    w = cfg.workers
    if w is None:
        env_workers()  # a bad default is refused too
        return
    if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
        raise InputError("--workers", str(w), "expected a positive integer")
    if w == 1 or cfg.executor == "ray" or not cfg.models:  # Ray: the cluster's nodes, not this machine
        return
    each, avail = worker_mib(cfg), available_mib()
    if w * each > avail:
        fits = max(1, int(avail // each))
        raise InputError("--workers", str(w), f"{w} workers need about {w * each / 1024:.1f} GiB ({each:.0f} MiB "
                         f"each: a copy of the model per worker) but {avail / 1024:.1f} GiB is available; "
                         f"use --workers {fits} or fewer")
