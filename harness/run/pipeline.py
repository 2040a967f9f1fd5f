"""`stabprobe run` as a library call: ladder -> audit -> decode -> score -> summary -> report.

The work is split into cells (one per model x variant, see harness.run.cell),
run by an executor (in-process, or Ray tasks), then merged: the top-level
tables, the drift between variants, the manifest and the reports are built
from the cell files alone. That is what makes --resume, --shard/merge and the
Ray executor produce the same rows as one uninterrupted local run.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from pydantic import ValidationError

from harness.core import rundir
from harness.audit.tokens import AuditRow
from harness.core.checked import counts as cache_counts, first_write_error
from harness.run.cell import EMPTY as EMPTY_CELL, Cell, CellSettings, cell_dir, is_finished, read_cell_record, run_cell
from harness.decode.greedy import BATCHING_MODES, DECODER_VERSION
from harness.summary.determinism import determinism_verdict
from harness.score.embedder import Embedder
from harness.errors import EXIT_ENVIRONMENT, EXIT_MODEL_FAILED, EXIT_OK, EnvironmentProblem, InputError, pydantic_error_to_input_error
from harness.ladder.records import Ladder, PromptPair
from harness.models.loading import load_model, load_tokenizer
from harness.run.manifest import base_manifest, device_info, library_versions
from harness.models.registry import ModelEntry
from harness.report.markdown import terminal_summary
from harness.core.rundir_read import read_ladder_record, read_manifest, read_table
from harness.report.write import write_reports
from harness.score.pairs import PairScore, score_pairs, scored_sides_from_frame
from harness.models.variants import REFERENCE, parse_variant, with_engine
from harness.decode.engines import CAPTURES, ENGINES

DEFAULT_LENGTHS = (64, 512)
LADDER_FILE = "ladder.json"
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunConfig:
    models: tuple[ModelEntry, ...]
    ladder: Ladder
    out: Path = Path("runs")
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    variants: tuple[str, ...] | None = None
    """None: each model's registry variants."""
    batch_size: int = 16
    batching: str = "bucket"
    """bucket (exact-length batches, batch-invariant on CPU) or padded (see harness.decode.greedy)."""
    embedder: str | None = None
    argv: tuple[str, ...] = ()
    progress: bool = True
    cache_dir: Path | None = None
    """Generation cache (None: no cache); see harness.run.gencache."""
    shard: tuple[int, int] | None = None
    """(i, n): run only the cells with index % n == i (Slurm array jobs); merge joins shards."""
    executor: str = "local"
    ray_address: str | None = None
    command: str = "run"
    """Recorded in the manifest (the gate runs the same pipeline as `gate`)."""
    engine: str | None = None
    """Engine of variants that do not name one (None: each model's registry engine); see harness.decode.engines."""
    capture: str = "generate"
    """Per-step readings of the HF engine: 'generate' (in-generation capture) or 'probe' (teacher-forced)."""
    loader: Callable[[ModelEntry, str], Any] = None  # type: ignore[assignment]
    """How a (model, variant) is loaded (default: lazy_load_model); tests inject degraded weights through it."""

    def __post_init__(self) -> None:
        if self.loader is None:
            object.__setattr__(self, "loader", lazy_load_model)


def enable_gpu_determinism() -> None:
    """Deterministic CUDA kernels where torch has them, set before CUDA initialises.

    On CPU nothing changes (the identical rung measures what the CPU kernels do).
    The flags in force are recorded in the manifest (determinism_flags); the
    identical rung, not these flags, decides the verdict.
    """
    import os

    import torch

    if not torch.cuda.is_available():
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility needs a fixed workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def lazy_load_model(entry: ModelEntry, variant: str):
    """Weights load only when a prompt misses the cache (module-level: picklable for Ray)."""
    return load_model(entry, variant, lazy=True)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    exit_code: int
    summary: dict[str, Any]
    terminal: str


def validate_config(cfg: RunConfig) -> None:
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
    if cfg.engine is not None and cfg.engine not in ENGINES:
        raise InputError("--engine", cfg.engine, f"expected one of {', '.join(ENGINES)}")
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


def variants_for(cfg: RunConfig, entry: ModelEntry) -> tuple[str, ...]:
    """The variants decoded for one model, spelled with their engine (harness.models.variants.with_engine);
    the reference (bf16) always comes first when present."""
    engine = cfg.engine or entry.engine
    names = tuple(with_engine(v, engine) for v in (cfg.variants if cfg.variants is not None else entry.variants))
    return tuple(sorted(dict.fromkeys(names), key=lambda v: (v != REFERENCE, names.index(v))))


def plan_cells(cfg: RunConfig) -> list[Cell]:
    """Every cell of the run, in a fixed order (shards and resume index into it)."""
    return [Cell(e, v) for e in cfg.models for v in variants_for(cfg, e)]


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    if shard is None:
        return list(cells)
    i, n = shard
    return [c for j, c in enumerate(cells) if j % n == i]


def config_record(cfg: RunConfig, embedder_info) -> dict[str, Any]:
    return {
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
        "cells": [c.name for c in plan_cells(cfg)],
        "shard": None if cfg.shard is None else f"{cfg.shard[0]}/{cfg.shard[1]}",
        "executor": cfg.executor,
        "batch_size": cfg.batch_size,
        "batching": cfg.batching,
        "decoder_version": DECODER_VERSION,
        "engine": cfg.engine,
        "capture": cfg.capture,
        "cache_dir": None if cfg.cache_dir is None else str(cfg.cache_dir),
        "embedder": dataclasses.asdict(embedder_info),
    }


def _settings(cfg: RunConfig, manifest: dict[str, Any]) -> CellSettings:
    return CellSettings(
        pairs=tuple(cfg.ladder.pairs), lengths=tuple(cfg.lengths), batch_size=cfg.batch_size, batching=cfg.batching,
        embedder=cfg.embedder, cache_dir=None if cfg.cache_dir is None else str(cfg.cache_dir), progress=cfg.progress,
        capture=cfg.capture,
        libraries=manifest["libraries"], device=manifest["device"],
    )


def _execute(cfg: RunConfig, cells: Sequence[Cell], run_dir: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
    settings = _settings(cfg, manifest)
    todo = [c for c in cells if not is_finished(run_dir, c)]
    if cfg.executor == "ray":
        from harness.run.executor_ray import run_cells_ray

        run_cells_ray(todo, settings, run_dir, cfg.loader, cfg.ray_address)
        return
    for cell in todo:
        run_cell(cell, settings, run_dir, cfg.loader, embedder.encode)


def run(cfg: RunConfig) -> RunResult:
    validate_config(cfg)
    embedder = Embedder(cfg.embedder, cache_dir=cfg.cache_dir)  # an unusable --embedder is an input error: before any directory exists
    run_dir = rundir.new_run_dir(cfg.out)
    enable_gpu_determinism()
    manifest = base_manifest(cfg.command, list(cfg.argv), config_record(cfg, embedder.info))
    rundir.atomic_write_json(run_dir / LADDER_FILE, _ladder_record(cfg.ladder))
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    return _run_in(run_dir, cfg, manifest, embedder)


def _run_in(run_dir: Path, cfg: RunConfig, manifest: dict[str, Any], embedder: Embedder) -> RunResult:
    cells = shard_cells(plan_cells(cfg), cfg.shard)
    t0 = time.perf_counter()
    try:
        _execute(cfg, cells, run_dir, manifest, embedder)
    except BaseException as exc:
        # Finished cells stay on disk; `stabprobe run --resume RUN_DIR` redoes only the rest.
        manifest["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"[:500]
        manifest["models"] = [r for c in plan_cells(cfg) if (r := read_cell_record(run_dir, c))]
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
        raise
    manifest.setdefault("phase_seconds", {})["cells"] = round(time.perf_counter() - t0, 3)
    return finalize(run_dir, cfg, manifest, embedder)


def finalize(run_dir: Path, cfg: RunConfig, manifest: dict[str, Any], embedder: Embedder) -> RunResult:
    """Merge the cell files into the run's tables, drift, manifest and reports."""
    t0 = time.perf_counter()
    before = cache_counts()  # the drift's embeddings and the report memos are cache entries too
    all_cells = plan_cells(cfg)
    records, audits, gens, pairs = [], [], [], []
    for cell in all_cells:
        rec = read_cell_record(run_dir, cell)
        if rec is None:
            continue
        records.append(rec)
        d = cell_dir(run_dir, cell)
        if rec.get("status") in ("ok", EMPTY_CELL):
            audits.append(read_table(d / "audit.parquet"))  # an empty cell's audit says why nothing was scored
        if rec.get("status") == "ok":
            gens.append(read_table(d / "generations.parquet"))
            pairs.append(read_table(d / "pairs.parquet"))
    audit_df = _concat(audits, [f.name for f in dataclasses.fields(AuditRow)])
    gens_df = _concat(gens, None)
    pairs_df = _concat(pairs, [f.name for f in dataclasses.fields(PairScore)])
    drift_df = _concat(_drift_frames(cfg, gens_df, embedder), [f.name for f in dataclasses.fields(PairScore)])
    from harness.audit.exposure import exposure_table

    for name, frame in ((rundir.AUDIT, audit_df), (rundir.GENERATIONS, gens_df), (rundir.PAIRS, pairs_df),
                        (rundir.DRIFT, drift_df), ("exposure.parquet", exposure_table(audit_df))):
        rundir.atomic_write_parquet(run_dir / name, frame)

    missing = [c.name for c in all_cells if not any(r["name"] == c.entry.name and r["variant"] == c.variant for r in records)]
    manifest["models"] = records
    manifest["cells_missing"] = missing
    # Complete only when every cell of the whole plan is finished: a shard alone is "partial".
    manifest["status"] = "complete" if not missing else "partial"
    if pairs_df.empty:
        # A run that scored nothing is never "complete": the audit (written above) says why.
        manifest["status"] = "empty"
        manifest["error"] = "nothing scored: " + ("; ".join(
            f"{r['name']}--{r['variant']}: {r.get('error') or r.get('status')}" for r in records) or "no cell finished")
    manifest["decoded_prompts"] = int(sum(r.get("decoded_prompts", 0) for r in records))
    manifest["cached_prompts"] = int(sum(r.get("cached_prompts", 0) for r in records))
    manifest["determinism"] = determinism_verdict(pairs_df)
    manifest.setdefault("phase_seconds", {})["merge"] = round(time.perf_counter() - t0, 3)
    # Damaged cache entries are recomputed, never used; failed cache writes leave the results whole (harness.core.checked).
    manifest["cache_entries_rejected"] = int(sum(r.get("cache_entries_rejected", 0) for r in records))
    manifest["cache_write_failures"] = int(sum(r.get("cache_write_failures", 0) for r in records))
    write_error = next((r["cache_write_error"] for r in records if r.get("cache_write_error")), None)
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    try:
        summary = write_reports(run_dir)
    except BaseException as exc:
        # The parquet files are whole, but a run without its reports is not complete.
        manifest["status"] = "crashed"
        manifest["error"] = f"writing reports: {type(exc).__name__}: {exc}"[:500]
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
        raise
    after = cache_counts()
    if after != before:
        manifest["cache_entries_rejected"] += after["rejected"] - before["rejected"]
        manifest["cache_write_failures"] += after["write_failures"] - before["write_failures"]
        write_error = write_error or first_write_error()
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    failed = [r for r in records if r.get("status") != "ok"]
    terminal = terminal_summary(summary)
    if manifest["status"] == "empty":
        terminal += f"\n{manifest['error']}"
    if manifest["cache_entries_rejected"]:
        terminal += f"\ncache entries rejected: {manifest['cache_entries_rejected']} (damaged or unreadable; recomputed)"
    code = EXIT_MODEL_FAILED if failed or manifest["status"] == "empty" else EXIT_OK
    if manifest["cache_write_failures"]:
        # The results are whole; the machine could not keep the cache: the environment's exit code, not a model's.
        manifest["cache_write_error"] = write_error
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
        terminal += (f"\ncache not written: {write_error} ({manifest['cache_write_failures']} cache writes failed; "
                     "the results are complete but were not cached)")
        code = EXIT_ENVIRONMENT
    return RunResult(run_dir, code, summary, terminal)


def _concat(frames: list[pd.DataFrame], columns: list[str] | None) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _drift_frames(cfg: RunConfig, gens: pd.DataFrame, embedder: Embedder) -> list[pd.DataFrame]:
    """Every variant against its reference on the same prompts (see harness.score.drift)."""
    from harness.score.drift import drift_sides, reference_of

    out: list[pd.DataFrame] = []
    if gens.empty:
        return out
    by_name = {e.name: e for e in cfg.models}
    for model, g in gens.groupby("model", sort=False):
        scored = {v: scored_sides_from_frame(f, cfg.lengths) for v, f in g.groupby("variant", sort=False)}
        prompt_of_key = dict(zip(g["prompt_key"], g.get("prompt_id", g["prompt_key"])))
        tok = None
        for variant, sides_v in scored.items():
            ref = reference_of(variant, scored)
            if ref not in scored:
                continue
            sides = drift_sides(variant, sides_v, scored[ref], prompt_of_key, ref)
            if not sides:
                continue
            if tok is None:
                tok = load_tokenizer(by_name[model])  # all variants of a model share one tokenizer
            rows, _ = score_pairs(sides, cfg.lengths, lambda ids: tok.decode(list(ids), skip_special_tokens=False), embedder.encode)
            out.append(pd.DataFrame([dataclasses.asdict(dataclasses.replace(r, variant=variant)) for r in rows]))
    return out


# --- resume / merge ---------------------------------------------------------

def _ladder_record(ladder: Ladder) -> dict[str, Any]:
    return {"name": ladder.name, "source": ladder.source, "source_sha256": ladder.source_sha256,
            "pairs": [dataclasses.asdict(p) for p in ladder.pairs]}


def _ladder_from_record(run_dir: Path) -> Ladder:
    rec = read_ladder_record(run_dir, LADDER_FILE)
    pairs = []
    for i, p in enumerate(rec["pairs"]):
        try:
            pairs.append(PromptPair(**p))
        except TypeError as exc:
            raise InputError(str(Path(run_dir) / LADDER_FILE), f"pairs[{i}]", f"not a pair record ({exc})") from None
    return Ladder(rec["name"], rec["source"], rec.get("source_sha256"), (), tuple(pairs), ())


def config_from_run_dir(run_dir: Path, **overrides) -> tuple[RunConfig, dict[str, Any]]:
    """Rebuild the RunConfig a run directory was made with (for --resume and merge)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, rebuild=True)
    mpath = str(run_dir / rundir.MANIFEST)
    conf = manifest["config"]
    variants = conf["variants"]
    models = []
    for i, m in enumerate(conf["models"]):
        if not isinstance(m.get("name"), str) or m["name"] not in variants:
            raise InputError(mpath, f"config.models[{i}].name", "missing, or not listed in config.variants")
        try:
            models.append(ModelEntry.model_validate({**m, "variants": variants[m["name"]]}))
        except ValidationError as exc:
            raise pydantic_error_to_input_error(mpath, exc, prefix=f"config.models[{i}]") from None
    shard = None
    if conf.get("shard"):
        try:
            i, n = (int(x) for x in conf["shard"].split("/"))
        except ValueError:
            raise InputError(mpath, "config.shard", f"expected I/N, got {conf['shard']!r}") from None
        shard = (i, n)
    cfg = RunConfig(
        models=tuple(models), ladder=_ladder_from_record(run_dir),
        out=run_dir.parent, lengths=tuple(conf["lengths"]), variants=None, batch_size=conf["batch_size"],
        batching=conf["batching"], embedder=conf["embedder"]["path"], cache_dir=Path(conf["cache_dir"]) if conf.get("cache_dir") else None,
        shard=shard, executor=conf.get("executor", "local"),
        capture=conf.get("capture", "generate"),
        engine="hf",  # the recorded variant names already carry a non-HF engine (with_engine)
    )
    return dataclasses.replace(cfg, **overrides), manifest


def resume(run_dir: Path, **overrides) -> RunResult:
    """Finish an interrupted run: only cells without a cell.json are run."""
    run_dir = Path(run_dir)
    cfg, manifest = config_from_run_dir(run_dir, **overrides)
    if manifest.get("status") == "complete":
        raise InputError(str(run_dir), "status", "run is already complete")
    check_environment(cfg)
    manifest["status"] = "running"
    manifest.setdefault("resumed", []).append({"argv": list(overrides.get("argv", ())), "libraries": library_versions(),
                                               "device": device_info()})
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    return _run_in(run_dir, cfg, manifest, Embedder(cfg.embedder, cache_dir=cfg.cache_dir))


def merge_runs(dirs: Sequence[Path], out: Path, argv: Sequence[str] = ()) -> RunResult:
    """Join shard run directories (same config) into one new run directory."""
    import shutil

    if not dirs:
        raise InputError("merge", "", "expected one or more run directories")
    configs = [config_from_run_dir(Path(d)) for d in dirs]
    base_cfg, base_manifest_ = configs[0]
    key = _merge_key(base_manifest_)
    for d, (_, m) in zip(dirs, configs):
        if _merge_key(m) != key:
            raise InputError(str(d), "config", "was made with a different configuration than the first directory")
    for d in dirs:  # damaged shard files are refused before the merged directory exists
        for cell in plan_cells(base_cfg):
            rec = read_cell_record(Path(d), cell)
            if rec is not None and rec.get("status") in ("ok", EMPTY_CELL):
                names = ("audit", "generations", "pairs") if rec["status"] == "ok" else ("audit",)
                for name in names:
                    read_table(cell_dir(Path(d), cell) / f"{name}.parquet")
    embedder = Embedder(base_cfg.embedder, cache_dir=base_cfg.cache_dir)
    run_dir = rundir.new_run_dir(out, suffix="-merged")
    for d in dirs:
        for cell in plan_cells(base_cfg):
            src = cell_dir(Path(d), cell)
            if (src / "cell.json").is_file() and not is_finished(run_dir, cell):
                shutil.copytree(src, cell_dir(run_dir, cell))
    shutil.copy2(Path(dirs[0]) / LADDER_FILE, run_dir / LADDER_FILE)
    manifest = dict(base_manifest_)
    manifest["command"] = "merge"
    manifest["argv"] = list(argv)
    manifest["merged_from"] = [str(d) for d in dirs]
    manifest["config"] = {**manifest["config"], "shard": None}
    cfg = dataclasses.replace(base_cfg, shard=None, out=Path(out))
    return finalize(run_dir, cfg, manifest, embedder)


def _merge_key(manifest: dict[str, Any]) -> str:
    conf = {k: v for k, v in manifest["config"].items() if k not in ("shard", "executor", "cache_dir")}
    return json.dumps(conf, sort_keys=True, default=str)


def rebuild_report(run_dir: Path) -> dict[str, Any]:
    """`stabprobe report`: summary.json and the reports from the parquet files and the manifest alone."""
    return write_reports(Path(run_dir))
