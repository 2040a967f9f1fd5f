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
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from harness.audit.records import AuditRow
from harness.audit.tokens import audit_pairs
from harness.core import rundir
from harness.core.memo import Memo
from harness.core.checked import counts as cache_counts, first_write_error
from harness.errors import error_line
from harness.decode.greedy import DECODER_VERSION, DecodeRequest, NonFiniteOutput, first_non_finite, prompt_key
from harness.decode.requests import decode_requests
from harness.decode.table import generation_from_row, generations_frame
from harness.ladder.records import PromptPair
from harness.run.records import Cell, CellSettings
from harness.run.keys import GENERATIONS, RESULTS, cell_key, ids_key, results_key
from harness.run.complete import complete, one_token_prompt_ends
from harness.score.pairs import kept_pairs, pairs_frame, score_generations
from harness.decode.engines import agreement_summary, decode_with_engine, effective_capture
from harness.models.variants import engine_of

CELL_RECORD = "cell.json"
CELLS_DIR = "cells"


def cell_dir(run_dir: Path, cell: Cell) -> Path:
    return Path(run_dir) / CELLS_DIR / cell.name


def is_finished(run_dir: Path, cell: Cell) -> bool:
    return (cell_dir(run_dir, cell) / CELL_RECORD).is_file()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=False)


def _decode_with_cache(loaded, reqs: list[DecodeRequest], settings: CellSettings, key: str, desc: str):
    """Generations for every request: cached ones reused (compact rows), the rest decoded (traces deferred)."""
    memo = Memo(settings.cache_dir)
    hits: dict[tuple[str, int], Any] = {}
    old = memo.load_frame(GENERATIONS, key)
    if not old.empty:
        by = {(r["cache_ids"], int(r["replicate"])): r for r in old.to_dict("records")}
        for r in reqs:
            row = by.get((ids_key(r.token_ids), r.replicate))
            if row is not None:
                hits[(r.prompt_key, r.replicate)] = dataclasses.replace(
                    generation_from_row(row, settings.lengths), model=loaded.info.name, variant=loaded.info.variant
                )
    todo = [r for r in reqs if (r.prompt_key, r.replicate) not in hits]
    fresh, engine_run = [], None
    if todo:
        with _progress(len(todo), desc, settings.progress) as bar:
            fresh, engine_run = decode_with_engine(
                loaded, todo, max(settings.lengths), settings.lengths, settings.batch_size, bar.update, settings.batching,
                engine_of(loaded.info.variant), settings.capture, traces="deferred")
    return list(hits.values()) + fresh, len(todo), len(hits), engine_run, {(r.prompt_key, r.replicate) for r in todo}


def _store_generations(settings: CellSettings, key: str, gens, reqs: list[DecodeRequest], keys: set) -> None:
    """Add the outputs decoded in this cell to the generation cache, in compact form (no full prompt-end rows)."""
    memo = Memo(settings.cache_dir)
    if memo.root is None or not keys:
        return
    mine = [g for g in gens if (g.prompt_key, g.replicate) in keys]
    frame = generations_frame(mine, settings.lengths)
    ids_of = {(r.prompt_key, r.replicate): ids_key(r.token_ids) for r in reqs}
    frame["cache_ids"] = [ids_of[(g.prompt_key, g.replicate)] for g in mine]
    memo.add_rows(GENERATIONS, key, frame, unique=("cache_ids", "replicate"))


def run_cell(cell: Cell, settings: CellSettings, run_dir: Path, loader: Callable, embed: Callable | None = None) -> dict[str, Any]:
    """Run one cell and write its files; returns its record (also written as cell.json)."""
    out = cell_dir(run_dir, cell)
    out.mkdir(parents=True, exist_ok=True)
    before = cache_counts()
    entry, variant = cell.entry, cell.variant
    record: dict[str, Any] = {"name": entry.name, "variant": variant, "source": entry.source,
                              "requested_revision": entry.revision, "timings_s": {}}
    t0 = time.perf_counter()
    try:
        loaded = loader(entry, variant)
    except Exception as exc:  # noqa: BLE001 - any load failure is recorded; the run goes on
        record.update(status="failed", error=error_line(exc),
                      traceback=traceback.format_exc(limit=3))
        record["timings_s"]["load"] = round(time.perf_counter() - t0, 3)
        _write_record(out, record, before)
        return record
    record.update(dataclasses.asdict(loaded.info))
    record["timings_s"]["load"] = loaded.info.load_seconds
    try:
        from harness.score.embedder import Embedder

        if embed is None:
            embed = Embedder(settings.embedder, cache_dir=settings.cache_dir).encode
        embedder_sha = getattr(getattr(embed, "__self__", None), "info", None)
        # The long-text method is part of what a distance means (harness.embedder): in the key.
        embedder_sha = f"{embedder_sha.sha256}|{embedder_sha.method}" if embedder_sha is not None else str(settings.embedder)
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
        if not reqs:
            # Nothing survived the audit: the audit rows are the result (they say why), and the
            # cell is "empty", never "ok" with empty tables.
            rundir.atomic_write_parquet(out / "audit.parquet", _frame(rows, AuditRow))
            record.update(status=EMPTY, error=f"nothing to decode: {dropped_reasons(rows)}",
                          decoded_prompts=0, cached_prompts=0)
            _write_record(out, record, before)
            return record
        engine = engine_of(variant)
        record["engine_name"], record["capture"] = engine, effective_capture(engine, settings.capture)
        key = cell_key(record, settings.lengths, DECODER_VERSION, settings.batching, settings.libraries, settings.device)
        rkey = results_key(key, settings.pairs, settings.lengths, entry.scaffold.model_dump() if entry.scaffold else None,
                           entry.name, embedder_sha, settings.store_full_dist)
        if Memo(settings.cache_dir).restore_files(RESULTS, rkey, _RESULT_FILES, out):
            # Same decodes, same pairs, same scorer and embedder: the scored tables are
            # the ones already computed; nothing is decoded, embedded or re-scored.
            record.update(status="ok", cache_key=key, results_key=rkey, results_from_cache=True,
                          decoded_prompts=0, cached_prompts=len(reqs), weights_loaded=False)
            record["timings_s"]["decode"] = round(time.perf_counter() - t, 3)
            _write_record(out, record, before)
            return record
        gens, decoded, cached, engine_run, fresh_keys = _decode_with_cache(loaded, reqs, settings, key, f"decode {cell.name}")
        _check_finite(gens)  # cached decodes too: a cache written before this check may hold them

        def redecode(subset):
            return decode_with_engine(loaded, subset, max(settings.lengths), settings.lengths, settings.batch_size, None,
                                      settings.batching, engine, settings.capture, traces="deferred")[0]

        # Traces at the steps the pairs read, full prompt-end rows for the pair divergences (harness.run.complete).
        in_generation = record["capture"] == "generate"
        ends = one_token_prompt_ends(loaded, settings.batch_size, settings.batching) if in_generation else redecode
        gens, counts, again = complete(loaded, gens, reqs, kept_pairs(settings.pairs, rows), sides, settings.lengths,
                                       redecode, ends)
        record["decode_completion"] = counts
        _store_generations(settings, key, gens, reqs, fresh_keys | again)
        record["timings_s"]["decode"] = round(time.perf_counter() - t, 3)
        # How the tokens were chosen and read; None when every prompt came from the cache.
        record["engine"] = None if engine_run is None else dataclasses.asdict(engine_run)
        record["probe"] = agreement_summary(gens)
        record["weights_loaded"] = loaded.weights_loaded  # False when every prompt came from the cache
        record["stability_traces"] = getattr(loaded, "stability_note", "from cache" if not loaded.weights_loaded else "n/a")
        # The closed-form head checked against the model's logits (harness.decode.check_trace_head), and
        # how often its top-1 is not greedy's (near-ties: the traces there describe another token).
        record["trace_head_check"] = getattr(loaded, "head_check", None)
        record["trace_head_top1_disagreements"] = head_top1_disagreements(gens)
        record["timings_s"]["load_weights"] = loaded.weights_seconds
        record.update(cache_key=key, decoded_prompts=decoded, cached_prompts=cached,
                      generated_tokens=int(sum(len(g.gen_ids) for g in gens)))

        owner = getattr(embed, "__self__", None)
        if owner is not None and getattr(owner, "loaded", True) is False:
            # Like the decode model's load, the embedder's load is not scoring work: timed on its own.
            t = time.perf_counter()
            _ = owner.model
            record["timings_s"]["load_embedder"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        tok = loaded.tokenizer
        decode_text = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
        scored, scores, texts = score_generations(settings.pairs, rows, sides, gens, settings.lengths, decode_text,
                                                  entry.scaffold, embed)
        record["embedded_texts"] = len(texts)
        if owner is not None and texts:
            # MiniLM reads 256 word pieces; longer texts are embedded whole as overlapping windows. Counted.
            record["embedder_windowed_texts"] = owner.count_windowed(texts)
            record["embedder_long_text"] = owner.info.method
        record["timings_s"]["score"] = round(time.perf_counter() - t, 3)

        prompt_ids = {}
        for p in settings.pairs:
            if p.pair_id in sides:  # kept pairs, in ladder order
                prompt_ids.setdefault(sides[p.pair_id][0], p.prompt_id)
        gframe = generations_frame(gens, settings.lengths, scored, full_dist=settings.store_full_dist)
        gframe["prompt_id"] = [prompt_ids.get(k, "") for k in gframe["prompt_key"]]
        rundir.atomic_write_parquet(out / "audit.parquet", _frame(rows, AuditRow))
        rundir.atomic_write_parquet(out / "generations.parquet", gframe)
        rundir.atomic_write_parquet(out / "pairs.parquet", pairs_frame(scores))
        Memo(settings.cache_dir).store_files(RESULTS, rkey, _RESULT_FILES, out)
        record["results_key"] = rkey
        record["status"] = "ok"
    except NonFiniteOutput as exc:
        where = _prompt_of_key(settings.pairs, rendered, exc.prompt_key)
        record.update(status=FAILED_NUMERICS, numerics={"what": exc.what, "step": exc.step, "prompt": where,
                                                        "replicate": exc.replicate},
                      error=f"non-finite {exc.what} at step {exc.step} of {where} (replicate {exc.replicate}); "
                            "nothing of this model x variant is scored")
    except Exception as exc:  # noqa: BLE001 - recorded per cell, the run goes on
        from harness.audit.render import TemplateRenderError

        # A template error already says what failed and where; its class name would only get in the way.
        error = " ".join(str(exc).split()) if isinstance(exc, TemplateRenderError) else error_line(exc)
        record.update(status="failed", error=error,
                      traceback=traceback.format_exc(limit=5))
    finally:
        if loaded.weights_loaded:
            # Release the weights before the next cell; skipped otherwise, since a
            # full collection costs ~0.3 s once sentence-transformers is imported.
            del loaded
            gc.collect()
    _write_record(out, record, before)
    return record


FAILED_NUMERICS = "failed-numerics"
"""Cell status when the model produced NaN/inf logits or hidden states (harness.decode.NonFiniteOutput)."""


def _check_finite(gens) -> None:
    for g in gens:
        bad = first_non_finite(g.trace_top1_logit, g.trace_top2_logit, None, g.prompt_end)
        if bad is None and not all(np.isfinite(v).all() for v in g.hidden_means.values()):
            bad = ("hidden states (mean over the first steps)", 0)
        if bad is not None:
            raise NonFiniteOutput(bad[0], g.prompt_key, g.replicate, bad[1])


def _prompt_of_key(pairs: Sequence[PromptPair], rendered, key: str) -> str:
    """Human name of a rendered prompt: ``prompt p001 (pair p001/synonym/curated, side b)``."""
    for p in pairs:
        for side, text in (("a", p.prompt_a), ("b", p.prompt_b)):
            r = rendered.get(text)
            if r is not None and prompt_key(r.token_ids) == key:
                return f"prompt {p.prompt_id} (pair {p.pair_id}, side {side})"
    return f"prompt {key}"


EMPTY = "empty"
"""Cell status when the audit dropped every pair (e.g. every prompt exceeds the context)."""


def dropped_reasons(rows: Sequence[AuditRow]) -> str:
    """``"all 42 pairs dropped by the audit (exceeds_context: 40, identical_input: 2)"``."""
    counts: dict[str, int] = {}
    for r in rows:
        if not r.kept:
            counts[r.reason] = counts.get(r.reason, 0) + 1
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"all {len(rows)} pairs dropped by the audit ({detail or 'no pairs in the ladder'})"


_RESULT_FILES = ("audit.parquet", "generations.parquet", "pairs.parquet")


def _write_record(out: Path, record: dict[str, Any], before: dict[str, int]) -> None:
    """cell.json, last: with this cell's cache rejections and failed cache writes (harness.core.checked)."""
    now = cache_counts()
    record["cache_entries_rejected"] = now["rejected"] - before["rejected"]
    record["cache_write_failures"] = now["write_failures"] - before["write_failures"]
    if record["cache_write_failures"]:
        record["cache_write_error"] = first_write_error()
    rundir.atomic_write_json(out / CELL_RECORD, record)


def head_top1_disagreements(gens) -> dict[str, int]:
    """Steps whose closed-form head top-1 differs from greedy's, over steps where the head was evaluated."""
    import numpy as np

    steps = differ = 0
    for g in gens:
        head, greedy = np.asarray(g.trace_head_top1_id), np.asarray(g.trace_top1_id)
        if head.size != greedy.size:
            continue  # generations cached before the head's top-1 was stored
        ok = head >= 0
        steps += int(ok.sum())
        differ += int((head[ok] != greedy[ok]).sum())
    return {"steps": steps, "disagree": differ}


def _frame(records: Sequence, cls) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in records], columns=[f.name for f in dataclasses.fields(cls)])


def read_cell_record(run_dir: Path, cell: Cell) -> dict[str, Any] | None:
    """A finished cell's record, or None; a damaged one is an input error naming the file (exit 2)."""
    from harness.errors import InputError
    from harness.core.rundir_read import read_json

    path = cell_dir(run_dir, cell) / CELL_RECORD
    if not path.is_file():
        return None
    rec = read_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("status"), str) or not isinstance(rec.get("name"), str):
        raise InputError(str(path), "status", "not a cell record (expected an object with name and status)")
    return rec
