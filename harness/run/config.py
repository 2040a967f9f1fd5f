"""One RunConfig: its defaults, its validation (the only one: the CLI parses, this checks) and its record.

The record is what manifest.json keeps under ``config``. :func:`config_record`
and :func:`config_from_record` are the two directions of one mapping, next to
each other (``--resume`` and ``merge`` rebuild the config from the record);
tests/run/test_config.py holds them inverse.
"""

from __future__ import annotations

import dataclasses
import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.decode.greedy import BATCHING_MODES, DECODER_VERSION, DEFAULT_BATCH_SIZE
from pydantic import ValidationError

from harness.errors import EnvironmentProblem, InputError, pydantic_error_to_input_error
from harness.ladder.records import Ladder, PromptPair
from harness.models.loading import load_model
from harness.models.registry import ModelEntry
from harness.models.variants import ENGINE_FLOOR, REFERENCE, engine_of, parse_variant, with_engine
from harness.core.engines import engine_names
from harness.decode.engines import CAPTURES
from harness.core import rundir
from harness.core.threads import policy_threads
from harness.run.worker_memory import check_workers, resolved_workers
from harness.core.rundir_read import load_manifest, read_ladder_record
from harness.schema import Manifest, RunConfigRecord

DEFAULT_LENGTHS = (64, 512)
LADDER_FILE = "ladder.json"
EXECUTORS = ("local", "ray")


def lazy_load_model(entry: ModelEntry, variant: str):
    """Weights load only when a prompt misses the cache (module-level: picklable for Ray)."""
    return load_model(entry, variant, lazy=True)


@dataclass(frozen=True)
class RunConfig:
    models: tuple[ModelEntry, ...]
    """The models, resolved from the registry (or local directories)."""
    ladder: Ladder
    """The pairs of the run."""
    out: Path = Path("runs")
    """Where the run directory is created."""
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    """Scored output lengths in tokens (one decode at the longest)."""
    variants: tuple[str, ...] | None = None
    """None: each model's registry variants."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Prompts per decode batch."""
    batching: str = "rows"
    """rows (mixed lengths, attention per equal-length group: batch-invariant, harness.decode.rows), bucket
    (exact-length batches, batch-invariant on CPU) or padded (left padding; see harness.decode.greedy)."""
    embedder: str | None = None
    """Sentence embedder (name or directory); None: the bundled MiniLM."""
    argv: tuple[str, ...] = ()
    """Command line, recorded in the manifest."""
    progress: bool = True
    """Progress bars on stderr."""
    cache_dir: Path | None = None
    """Memo store of generations, results and figures (None: no cache); see harness.core.memo."""
    shard: tuple[int, int] | None = None
    """(i, n): run only the cells with index % n == i (Slurm array jobs); merge joins shards."""
    executor: str = "local"
    """local or ray."""
    ray_address: str | None = None
    """Ray cluster address (None: a local Ray)."""
    command: str = "run"
    """Recorded in the manifest (the gate runs the same pipeline as `gate`)."""
    engine: str | None = None
    """Engine of variants that do not name one (None: each model's registry engine); see harness.decode.engines."""
    capture: str = "generate"
    """Per-step readings of the HF engine: 'generate' (in-generation capture) or 'probe' (teacher-forced)."""
    store_full_dist: bool = False
    """Also keep every full prompt-end log-softmax row in generations.parquet (harness.decode.prompt_end)."""
    twin: bool = False
    """Compute the teacher-forced twin divergence in every HF cell (harness.run.twin); off: its columns are NaN."""
    threads: int | None = None
    """torch CPU threads of the decode (None: one on CPU, torch's own count on CUDA: harness.core.threads, applied
    by run, resume and merge). Recorded as the manifest's ``device.torch_threads``, not in this record."""
    workers: int | None = None
    """Decode workers per cell (``--workers``; None: as many as the cores this process may use, fewer for a cell
    whose work is small (harness.run.worker_memory.workers_for); with the Ray executor, None keeps one worker per cell task). harness.run.workers."""
    loader: Callable[[ModelEntry, str], Any] = None  # type: ignore[assignment]
    """How a (model, variant) is loaded (default: lazy_load_model); tests inject degraded weights through it."""

    def __post_init__(self) -> None:
        if self.loader is None:
            object.__setattr__(self, "loader", lazy_load_model)


def validate_config(cfg: RunConfig) -> None:
    policy_threads(cfg.threads)  # a bad count is an input error before any directory exists
    check_workers(cfg)  # a bad or too large --workers too (harness.run.worker_memory)
    if not cfg.lengths or any(L <= 0 for L in cfg.lengths):
        raise InputError("--lengths", "", "expected positive integers, e.g. 64,512")
    if cfg.batch_size <= 0:
        raise InputError("--batch-size", "", "expected a positive integer")
    if cfg.batching not in BATCHING_MODES:
        raise InputError("--batching", cfg.batching, f"expected one of {', '.join(BATCHING_MODES)}")
    if cfg.executor not in EXECUTORS:
        raise InputError("--executor", cfg.executor, f"expected one of {', '.join(EXECUTORS)}")
    if cfg.shard is not None and not (cfg.shard[1] > 0 and 0 <= cfg.shard[0] < cfg.shard[1]):
        raise InputError("--shard", f"{cfg.shard[0]}/{cfg.shard[1]}", "expected i/n with 0 <= i < n")
    if cfg.engine is not None and cfg.engine not in engine_names():
        raise InputError("--engine", cfg.engine, f"expected one of {', '.join(engine_names())}")
    if cfg.capture not in CAPTURES:
        raise InputError("--capture", cfg.capture, f"expected one of {', '.join(CAPTURES)}")
    for v in cfg.variants or ():
        try:
            parse_variant(v)
        except ValueError as exc:
            raise InputError("--variants", v, str(exc)) from None
    check_environment(cfg)


def check_environment(cfg: RunConfig) -> None:
    """What the run needs from the machine, checked before a run directory exists (exit 2 or 4)."""
    if cfg.cache_dir is not None:
        cache = Path(cfg.cache_dir)
        if cache.exists() and not cache.is_dir():
            raise InputError(str(cache), "--cache", "is a file, expected a directory")
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the machine, not the flag
                raise EnvironmentProblem(f"{cache}: cannot create the cache directory ({exc.strerror})") from None
            raise InputError(str(cache), "--cache", f"cannot create the cache directory ({exc.strerror})") from None
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise EnvironmentProblem("--executor ray: Ray is not installed (pip install 'stabprobe[ray]'), "
                                     "or run with --executor local") from None
        if cfg.ray_address and cfg.ray_address != "auto":
            check_ray_reachable(cfg.ray_address)


RAY_CONNECT_SECONDS = 10.0
"""How long a --ray-address gets to accept a connection (ray.init has no timeout: it waited over 400 s)."""


def check_ray_reachable(address: str, timeout: float = RAY_CONNECT_SECONDS) -> None:
    """The cluster's head accepts a TCP connection within ``timeout``, else exit 4 before any run directory
    exists (``host:port``, ``ray://host:port``)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--ray-address", address, "expected host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise EnvironmentProblem(f"--ray-address {address}: cannot connect within {timeout:g} s ({reason})") from None


def variants_for(cfg: RunConfig, entry: ModelEntry) -> tuple[str, ...]:
    """The variants decoded for one model, spelled with their engine (harness.models.variants.with_engine);
    the reference (bf16) always comes first when present."""
    engine = cfg.engine or entry.engine
    names = tuple(with_engine(v, engine) for v in (cfg.variants if cfg.variants is not None else entry.variants))
    names += engine_floor_variants(names)
    return tuple(sorted(dict.fromkeys(names), key=lambda v: (v != REFERENCE, names.index(v))))


def engine_floor_variants(names: Sequence[str]) -> tuple[str, ...]:
    """The engine-floor variants a run of ``names`` gains: ``f16@llamacpp`` beside any other llama.cpp variant."""
    out = []
    for engine, floor in ENGINE_FLOOR.items():
        if floor not in names and any(engine_of(v) == engine for v in names):
            out.append(floor)
    return tuple(out)


def cell_names(cfg: RunConfig) -> list[str]:
    """``<model>--<variant>`` of every cell, in plan order (harness.run.records.Cell.name)."""
    return [f"{e.name}--{v}" for e in cfg.models for v in variants_for(cfg, e)]


# --- the record (manifest.json "config") and back --------------------------------------


def config_record(cfg: RunConfig, embedder_info) -> RunConfigRecord:
    """manifest.json ``config`` (harness.schema.RunConfigRecord: a misspelt key here fails at once)."""
    return RunConfigRecord.model_validate({
        "models": [m.model_dump() for m in cfg.models],
        "ladder": {
            "name": cfg.ladder.name,
            "source": cfg.ladder.source,
            "sha256": cfg.ladder.source_sha256,
            "prompts": len(cfg.ladder.prompts),
            "pairs": len(cfg.ladder.pairs),
            "rung_counts": cfg.ladder.rung_counts(),
            "skipped_edits": len(cfg.ladder.skipped),
            "skipped": [dataclasses.asdict(s) for s in cfg.ladder.skipped],
        },
        "lengths": list(cfg.lengths),
        "max_new_tokens": max(cfg.lengths),
        "variants": {m.name: list(variants_for(cfg, m)) for m in cfg.models},
        "cells": cell_names(cfg),
        "shard": None if cfg.shard is None else f"{cfg.shard[0]}/{cfg.shard[1]}",
        "executor": cfg.executor,
        "workers": resolved_workers(cfg),
        "batch_size": cfg.batch_size,
        "batching": cfg.batching,
        "decoder_version": DECODER_VERSION,
        "engine": cfg.engine,
        "capture": cfg.capture,
        "store_full_dist": cfg.store_full_dist,
        "twin": cfg.twin,
        "cache_dir": None if cfg.cache_dir is None else str(cfg.cache_dir),
        "embedder": dataclasses.asdict(embedder_info),
    })


def config_from_record(conf: RunConfigRecord, ladder: Ladder, out: Path, source: str = "manifest.json") -> RunConfig:
    """The inverse of :func:`config_record` (the ladder comes from ladder.json: the record only counts it).

    A damaged record is an input error naming ``source`` and the field (exit 2), never a traceback.
    """
    models = []
    for i, m in enumerate(conf.models):
        if not isinstance(m.get("name"), str) or m["name"] not in conf.variants:
            raise InputError(source, f"config.models[{i}].name", "missing, or not listed in config.variants")
        try:
            models.append(ModelEntry.model_validate({**m, "variants": conf.variants[m["name"]]}))
        except ValidationError as exc:
            raise pydantic_error_to_input_error(source, exc, prefix=f"config.models[{i}]") from None
    shard = None
    if conf.shard:
        try:
            i, n = (int(x) for x in conf.shard.split("/"))
        except ValueError:
            raise InputError(source, "config.shard", f"expected I/N, got {conf.shard!r}") from None
        shard = (i, n)
    return RunConfig(
        models=tuple(models), ladder=ladder, out=out, lengths=tuple(conf.lengths), variants=None,
        batch_size=conf.batch_size, batching=conf.batching, embedder=conf.embedder.path,
        cache_dir=Path(conf.cache_dir) if conf.cache_dir else None,
        shard=shard, executor=conf.executor, capture=conf.capture, store_full_dist=conf.store_full_dist,
        twin=conf.twin,
        workers=conf.workers,
        # The recorded variant names already carry a non-HF engine, and with_engine keeps what is written.
        engine=conf.engine,
    )


def ladder_record(ladder: Ladder) -> dict[str, Any]:
    """ladder.json: the exact pairs of the run."""
    return {"name": ladder.name, "source": ladder.source, "source_sha256": ladder.source_sha256,
            "pairs": [dataclasses.asdict(p) for p in ladder.pairs]}


def ladder_from_record(rec: dict[str, Any], source: str = LADDER_FILE) -> Ladder:
    pairs = []
    for i, p in enumerate(rec["pairs"]):
        try:
            pairs.append(PromptPair(**p))
        except TypeError as exc:
            raise InputError(source, f"pairs[{i}]", f"not a pair record ({exc})") from None
    return Ladder(rec["name"], rec["source"], rec.get("source_sha256"), (), tuple(pairs), ())


def config_from_run_dir(run_dir: Path, **overrides) -> tuple[RunConfig, Manifest]:
    """Rebuild the RunConfig a run directory was made with (for --resume and merge)."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    ladder = ladder_from_record(read_ladder_record(run_dir, LADDER_FILE), str(run_dir / LADDER_FILE))
    cfg = config_from_record(manifest.config, ladder, run_dir.parent, str(run_dir / rundir.MANIFEST))
    return dataclasses.replace(cfg, **overrides), manifest
