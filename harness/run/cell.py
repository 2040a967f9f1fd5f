"""One cell = one (model, variant): load, audit, decode (through the cache), score, write.

A cell writes its tables into ``cells/<model>--<variant>/`` and ``cell.json``
last: a cell directory with ``cell.json`` is finished (ok or failed), one
without it is redone by ``--resume``. Cells share nothing but the read-only
config, so they can run in any order, in any process (local, Ray, Slurm array).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from harness.core import rundir
from harness.audit.tokens import AuditRow, audit_pairs
from harness.decode.greedy import DECODER_VERSION, DecodeRequest, decode_all, prompt_key
from harness.run.gencache import GenerationCache, cell_key, ids_key
from harness.decode.table import generation_from_row, generations_frame
from harness.ladder.records import PromptPair
from harness.models.registry import ModelEntry
from harness.score.scaffold import answer_start_token
from harness.score.pairs import PairScore, PairSides, ScoredSide, kept_pairs, score_pairs

CELL_RECORD = "cell.json"
CELLS_DIR = "cells"


@dataclass(frozen=True)
class Cell:
    entry: ModelEntry
    variant: str

    @property
    def name(self) -> str:
        return f"{self.entry.name}--{self.variant}"


@dataclass(frozen=True)
class CellSettings:
    """The part of the run config a cell needs (picklable: it travels to Ray workers)."""

    pairs: tuple[PromptPair, ...]
    lengths: tuple[int, ...]
    batch_size: int
    batching: str
    embedder: str | None
    cache_dir: str | None
    progress: bool
    libraries: dict[str, Any]
    device: dict[str, Any]


def cell_dir(run_dir: Path, cell: Cell) -> Path:
    return Path(run_dir) / CELLS_DIR / cell.name


def is_finished(run_dir: Path, cell: Cell) -> bool:
    return (cell_dir(run_dir, cell) / CELL_RECORD).is_file()


def decode_requests(pairs, audit: Sequence[AuditRow], rendered) -> tuple[list[DecodeRequest], dict[str, tuple[str, str, int]]]:
    """Distinct (prompt, replicate) requests, and for each kept pair the keys of its two sides."""
    kept = {a.pair_id for a in audit if a.kept}
    reqs: dict[tuple[str, int], DecodeRequest] = {}
    sides: dict[str, tuple[str, str, int]] = {}
    for p in pairs:
        if p.pair_id not in kept:
            continue
        ra, rb = rendered[p.prompt_a], rendered[p.prompt_b]
        ka, kb = prompt_key(ra.token_ids), prompt_key(rb.token_ids)
        rep_b = 1 if p.rung == "identical" else 0  # the noise floor's second side is its own decode
        reqs.setdefault((ka, 0), DecodeRequest(ka, ra.token_ids, 0, ra.text))
        reqs.setdefault((kb, rep_b), DecodeRequest(kb, rb.token_ids, rep_b, rb.text))
        sides[p.pair_id] = (ka, kb, rep_b)
    return list(reqs.values()), sides


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=False)


def _decode_with_cache(loaded, reqs: list[DecodeRequest], settings: CellSettings, key: str, desc: str):
    """Generations for every request: cached ones reused, the rest decoded and added to the cache."""
    cache = GenerationCache(Path(settings.cache_dir)) if settings.cache_dir else None
    hits: dict[tuple[str, int], Any] = {}
    if cache is not None:
        old = cache.load(key)
        if not old.empty:
            by = {(r["cache_ids"], int(r["replicate"])): r for r in old.to_dict("records")}
            for r in reqs:
                row = by.get((ids_key(r.token_ids), r.replicate))
                if row is not None:
                    hits[(r.prompt_key, r.replicate)] = dataclasses.replace(
                        generation_from_row(row, settings.lengths), model=loaded.info.name, variant=loaded.info.variant
                    )
    todo = [r for r in reqs if (r.prompt_key, r.replicate) not in hits]
    fresh = []
    if todo:
        with _progress(len(todo), desc, settings.progress) as bar:
            fresh = decode_all(loaded, todo, max(settings.lengths), settings.lengths, settings.batch_size, bar.update,
                               settings.batching)
        if cache is not None:
            frame = generations_frame(fresh, settings.lengths)
            ids_of = {(r.prompt_key, r.replicate): ids_key(r.token_ids) for r in todo}
            frame["cache_ids"] = [ids_of[(g.prompt_key, g.replicate)] for g in fresh]
            cache.store(key, frame)
    return list(hits.values()) + fresh, len(todo), len(hits)


def run_cell(cell: Cell, settings: CellSettings, run_dir: Path, loader: Callable, embed: Callable | None = None) -> dict[str, Any]:
    """Run one cell and write its files; returns its record (also written as cell.json)."""
    out = cell_dir(run_dir, cell)
    out.mkdir(parents=True, exist_ok=True)
    entry, variant = cell.entry, cell.variant
    record: dict[str, Any] = {"name": entry.name, "variant": variant, "source": entry.source,
                              "requested_revision": entry.revision, "timings_s": {}}
    t0 = time.perf_counter()
    try:
        loaded = loader(entry, variant)
    except Exception as exc:  # noqa: BLE001 - any load failure is recorded; the run goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                      traceback=traceback.format_exc(limit=3))
        record["timings_s"]["load"] = round(time.perf_counter() - t0, 3)
        rundir.atomic_write_json(out / CELL_RECORD, record)
        return record
    record.update(dataclasses.asdict(loaded.info))
    record["timings_s"]["load"] = loaded.info.load_seconds
    try:
        from harness.score.embedder import Embedder

        if embed is None:
            embed = Embedder(settings.embedder, cache_dir=settings.cache_dir).encode
        embedder_sha = getattr(getattr(embed, "__self__", None), "info", None)
        embedder_sha = embedder_sha.sha256 if embedder_sha is not None else str(settings.embedder)
        t = time.perf_counter()
        rows, rendered = audit_pairs(entry.name, loaded.tokenizer, loaded.policy, settings.pairs,
                                     context_len=loaded.info.context_length, max_new_tokens=max(settings.lengths),
                                     variant=variant)
        record["timings_s"]["audit"] = round(time.perf_counter() - t, 3)
        # A template that writes today's date makes prompts a function of the run date: say so next to the
        # date it was given (harness.audit.template_clock).
        record["template_reads_clock"] = any(r.reads_clock for r in rendered.values())

        t = time.perf_counter()
        reqs, sides = decode_requests(settings.pairs, rows, rendered)
        key = cell_key(record, settings.lengths, DECODER_VERSION, settings.batching, settings.libraries, settings.device)
        rkey = results_key(key, settings, entry, embedder_sha)
        if _restore_results(settings, rkey, out, rows):
            # Same decodes, same pairs, same scorer and embedder: the scored tables are
            # the ones already computed; nothing is decoded, embedded or re-scored.
            record.update(status="ok", cache_key=key, results_key=rkey, results_from_cache=True,
                          decoded_prompts=0, cached_prompts=len(reqs), weights_loaded=False)
            record["timings_s"]["decode"] = round(time.perf_counter() - t, 3)
            rundir.atomic_write_json(out / CELL_RECORD, record)
            return record
        gens, decoded, cached = _decode_with_cache(loaded, reqs, settings, key, f"decode {cell.name}")
        record["timings_s"]["decode"] = round(time.perf_counter() - t, 3)
        record["weights_loaded"] = loaded.weights_loaded  # False when every prompt came from the cache
        record["stability_traces"] = getattr(loaded, "stability_note", "from cache" if not loaded.weights_loaded else "n/a")
        record["timings_s"]["load_weights"] = loaded.weights_seconds
        record.update(cache_key=key, decoded_prompts=decoded, cached_prompts=cached,
                      generated_tokens=int(sum(len(g.gen_ids) for g in gens)))

        owner = getattr(embed, "__self__", None)
        if owner is not None and getattr(owner, "_model", True) is None:
            # Like the decode model's load, the embedder's load is not scoring work: timed on its own.
            t = time.perf_counter()
            _ = owner.model
            record["timings_s"]["load_embedder"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        tok = loaded.tokenizer
        decode_text = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
        scored = {(g.prompt_key, g.replicate): ScoredSide(g, *answer_start_token(g.gen_ids, decode_text, entry.scaffold))
                  for g in gens}
        pair_sides = [PairSides(p, scored[(sides[p.pair_id][0], 0)], scored[(sides[p.pair_id][1], sides[p.pair_id][2])])
                      for p in kept_pairs(settings.pairs, rows)]
        scores, texts = score_pairs(pair_sides, settings.lengths, decode_text, embed)
        record["embedded_texts"] = len(texts)
        if owner is not None and texts:
            # MiniLM reads 256 word pieces; longer texts are cut by the model. Counted, never hidden.
            record["embedder_truncated_texts"] = owner.count_truncated(texts)
        record["timings_s"]["score"] = round(time.perf_counter() - t, 3)

        prompt_ids = {}
        for p in kept_pairs(settings.pairs, rows):
            prompt_ids.setdefault(sides[p.pair_id][0], p.prompt_id)
        gframe = generations_frame(gens, settings.lengths, scored)
        gframe["prompt_id"] = [prompt_ids.get(k, "") for k in gframe["prompt_key"]]
        rundir.atomic_write_parquet(out / "audit.parquet", _frame(rows, AuditRow))
        rundir.atomic_write_parquet(out / "generations.parquet", gframe)
        rundir.atomic_write_parquet(out / "pairs.parquet", _frame(scores, PairScore))
        _store_results(settings, rkey, out)
        record["results_key"] = rkey
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - recorded per cell, the run goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                      traceback=traceback.format_exc(limit=5))
    finally:
        if loaded.weights_loaded:
            # Release the weights before the next cell; skipped otherwise, since a
            # full collection costs ~0.3 s once sentence-transformers is imported.
            del loaded
            gc.collect()
    rundir.atomic_write_json(out / CELL_RECORD, record)
    return record


SCORER_VERSION = "1"
_RESULT_FILES = ("audit.parquet", "generations.parquet", "pairs.parquet")


def results_key(decode_key: str, settings: CellSettings, entry: ModelEntry, embedder_sha: str) -> str:
    """Everything a cell's scored tables depend on beyond its decodes."""
    import hashlib

    material = json.dumps({
        "decode": decode_key, "scorer": SCORER_VERSION, "embedder": embedder_sha,
        "pairs": [dataclasses.astuple(p) for p in settings.pairs], "lengths": list(settings.lengths),
        "scaffold": entry.scaffold.model_dump() if entry.scaffold else None, "name": entry.name,
    }, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def _results_dir(settings: CellSettings, rkey: str) -> Path | None:
    return None if not settings.cache_dir else Path(settings.cache_dir) / "results" / rkey[:2] / rkey


def _restore_results(settings: CellSettings, rkey: str, out: Path, rows) -> bool:
    src = _results_dir(settings, rkey)
    if src is None or not all((src / f).is_file() for f in _RESULT_FILES):
        return False
    for f in _RESULT_FILES:
        rundir.atomic_write_bytes(out / f, (src / f).read_bytes())
    return True


def _store_results(settings: CellSettings, rkey: str, out: Path) -> None:
    dst = _results_dir(settings, rkey)
    if dst is None:
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in _RESULT_FILES:
        rundir.atomic_write_bytes(dst / f, (out / f).read_bytes())


def _frame(records: Sequence, cls) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in records], columns=[f.name for f in dataclasses.fields(cls)])


def read_cell_record(run_dir: Path, cell: Cell) -> dict[str, Any] | None:
    path = cell_dir(run_dir, cell) / CELL_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
