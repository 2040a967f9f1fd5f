"""One cell = one (model, variant): load, audit, decode (through the cache), score, write: one stage function each.

A cell writes its tables into ``cells/<model>--<variant>/`` and ``cell.json``
last: a cell directory with ``cell.json`` is finished (ok or failed), one
without it is redone by ``--resume``. Cells share nothing but the read-only
config, so they can run in any order, in any process (local, Ray, Slurm array).
"""

from __future__ import annotations

import dataclasses
import logging
import gc
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from harness.audit.records import AuditRow
from harness.audit.tokens import audit_pairs
from harness.core import rundir
from harness.core.memo import Memo
from harness.core.noise import once_each
from harness.core.checked import counts as cache_counts, first_write_error
from harness.errors import error_line
from harness.decode.greedy import DECODER_VERSION, DecodeRequest, NonFiniteOutput, first_non_finite, prompt_key
from harness.decode.requests import decode_requests
from harness.decode.table import generation_from_row, generations_frame
from harness.ladder.records import PromptPair
from harness.run.records import Cell, CellSettings
from harness.run.keys import GENERATIONS, RESULTS, cell_key, ids_key, results_key
from harness.run.complete import complete
from harness.run.parallel import CellDecoder
from harness.run.twin import twin_stage
from harness.score.pairs import kept_pairs, pairs_frame, score_generations
from harness.decode.engines import agreement_summary, effective_capture
from harness.models.variants import engine_of
from harness.schema import CellRecord

log = logging.getLogger(__name__)

CELL_RECORD = "cell.json"
CELLS_DIR = "cells"


def cell_dir(run_dir: Path, cell: Cell) -> Path:
    return Path(run_dir) / CELLS_DIR / cell.name


def is_finished(run_dir: Path, cell: Cell) -> bool:
    return (cell_dir(run_dir, cell) / CELL_RECORD).is_file()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # Left on screen when done: the bar is the decode's record of how long it took.
    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=True, dynamic_ncols=True)


def _decode_with_cache(loaded, reqs: list[DecodeRequest], settings: CellSettings, key: str, desc: str, decoder):
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
            fresh, engine_run = decoder.decode(todo, bar.update)  # one worker or N (harness.run.parallel)
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


@dataclass
class CellContext:
    """One cell on its way through the stages: the live objects each stage hands the next, and the record so far.

    Mutable on purpose (it holds the loaded model and the generations, which are not records); the saved part
    is ``record``, a frozen harness.schema.CellRecord that each stage evolves (a misspelt field fails there).
    """

    cell: Cell
    """The model x variant."""
    settings: CellSettings
    """The part of the run config a cell needs."""
    out: Path
    """cells/<model>--<variant>/."""
    record: CellRecord
    """cell.json so far."""
    loaded: Any = None
    """The LoadedModel (stage 1; weights load lazily on the first cache miss)."""
    loader: Callable | None = None
    """How the model was loaded: decode workers load their own copy with it (harness.run.workers)."""
    embed: Callable | None = None
    """The sentence embedder's encode (stage 3)."""
    embedder_sha: str = ""
    """The embedder's identity in the results key: sha256 and long-text method (stage 3)."""
    rows: list[AuditRow] = field(default_factory=list)
    """Audit rows, one per pair (stage 2)."""
    rendered: dict = field(default_factory=dict)
    """Prompt text -> its rendering through the chat template (stage 2)."""
    reqs: list[DecodeRequest] = field(default_factory=list)
    """One decode request per distinct kept prompt and replicate (stage 2)."""
    sides: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """Kept pair id -> (prompt key of a, of b, replicate of b) (stage 2)."""
    key: str = ""
    """Decode cache key (stage 3)."""
    rkey: str = ""
    """Scored-tables cache key (stage 3)."""
    worker_warnings: dict[str, int] = field(default_factory=dict)
    """Third-party warnings the decode's worker processes showed once and counted (stage 4; added to the cell's)."""

    def note(self, **fields: Any) -> None:
        self.record = self.record.evolve(**fields)

    def timed(self, phase: str, since: float | None = None, seconds: float | None = None) -> None:
        """timings_s[phase]: the seconds given, or those since ``since`` (perf_counter), rounded to ms."""
        value = seconds if seconds is not None else round(time.perf_counter() - since, 3)
        self.note(timings_s=self.record.timings_s.evolve(**{phase: value}))


def run_cell(cell: Cell, settings: CellSettings, run_dir: Path, loader: Callable,
             embed: Callable | None = None) -> CellRecord:
    """Run one cell and write its files; returns its record (also written as cell.json)."""
    out = cell_dir(run_dir, cell)
    out.mkdir(parents=True, exist_ok=True)
    before = cache_counts()
    entry = cell.entry
    ctx = CellContext(cell, settings, out, CellRecord(
        name=entry.name, variant=cell.variant, source=entry.source, requested_revision=entry.revision, timings_s={}),
        loader=loader)
    log.info("%s: loading", cell.name)
    if not _load(ctx, loader):
        log.info("%s: failed to load: %s", cell.name, ctx.record.error)  # recorded; the run's end lists it
        return _write_record(ctx, before)
    quiet = once_each()  # a library that warns per call (bitsandbytes) is shown once and counted (issue 30)
    seen = quiet.__enter__()
    try:
        log.info("%s: token audit of %d pairs", cell.name, len(settings.pairs))
        if _audit(ctx) and not _restore_results(ctx, embed):
            gens = _decode(ctx)
            twin = twin_stage(ctx, gens)  # the teacher-forced twin divergence (harness.run.twin)
            log.info("%s: scoring %d kept pairs at lengths %s", cell.name, sum(1 for r in ctx.rows if r.kept),
                     ", ".join(map(str, settings.lengths)))
            scored, scores = _score(ctx, gens, twin)
            _write_tables(ctx, gens, scored, scores)
    except NonFiniteOutput as exc:
        where = _prompt_of_key(settings.pairs, ctx.rendered, exc.prompt_key)
        ctx.note(status=FAILED_NUMERICS, numerics={"what": exc.what, "step": exc.step, "prompt": where,
                                                   "replicate": exc.replicate},
                 error=f"non-finite {exc.what} at step {exc.step} of {where} (replicate {exc.replicate}); "
                       "nothing of this model x variant is scored")
    except Exception as exc:  # noqa: BLE001 - recorded per cell, the run goes on
        from harness.audit.render import TemplateRenderError

        # A template error already says what failed and where; its class name would only get in the way.
        error = " ".join(str(exc).split()) if isinstance(exc, TemplateRenderError) else error_line(exc)
        ctx.note(status="failed", error=error, traceback=traceback.format_exc(limit=5))
    finally:
        quiet.__exit__(None, None, None)
        seen.update(ctx.worker_warnings)  # each worker process showed its own once: one count per cell
        if seen:
            ctx.note(third_party_warnings={k[:200]: n for k, n in seen.items()})
        if ctx.loaded.weights_loaded:
            # Release the weights before the next cell; skipped otherwise, since a
            # full collection costs ~0.3 s once sentence-transformers is imported.
            ctx.loaded = None
            gc.collect()
    return _write_record(ctx, before)


def _load(ctx: CellContext, loader: Callable) -> bool:
    """Stage 1: the model (lazily: weights load only when a prompt misses the cache). False: failed, recorded."""
    t0 = time.perf_counter()
    try:
        ctx.loaded = loader(ctx.cell.entry, ctx.cell.variant)
    except Exception as exc:  # noqa: BLE001 - any load failure is recorded; the run goes on
        ctx.note(status="failed", error=error_line(exc), traceback=traceback.format_exc(limit=3))
        ctx.timed("load", t0)
        return False
    ctx.note(**dataclasses.asdict(ctx.loaded.info))
    ctx.timed("load", seconds=ctx.loaded.info.load_seconds)
    return True


def _audit(ctx: CellContext) -> bool:
    """Stage 2: render and audit every pair; the decode requests of the kept ones. False: nothing survived."""
    s, loaded, t = ctx.settings, ctx.loaded, time.perf_counter()
    ctx.rows, ctx.rendered = audit_pairs(ctx.cell.entry.name, loaded.tokenizer, loaded.policy, s.pairs,
                                         context_len=loaded.info.context_length, max_new_tokens=max(s.lengths),
                                         variant=ctx.cell.variant)
    ctx.timed("audit", t)
    # A template that writes today's date makes prompts a function of the run date: say so next to the
    # date it was given (harness.audit.template_clock).
    ctx.note(template_reads_clock=any(r.reads_clock for r in ctx.rendered.values()))
    ctx.reqs, ctx.sides = decode_requests(s.pairs, ctx.rows, ctx.rendered)
    if ctx.reqs:
        return True
    # Nothing survived the audit: the audit rows are the result (they say why), and the
    # cell is "empty", never "ok" with empty tables.
    rundir.atomic_write_parquet(ctx.out / "audit.parquet", _frame(ctx.rows, AuditRow))
    ctx.note(status=EMPTY, error=f"nothing to decode: {dropped_reasons(ctx.rows)}", decoded_prompts=0, cached_prompts=0)
    return False


def _restore_results(ctx: CellContext, embed: Callable | None) -> bool:
    """Stage 3: the cache keys; True when the scored tables come whole from the cache (nothing else to do)."""
    from harness.score.embedder import Embedder

    s, entry, t = ctx.settings, ctx.cell.entry, time.perf_counter()
    ctx.embed = embed if embed is not None else Embedder(s.embedder, cache_dir=s.cache_dir).encode
    info = getattr(getattr(ctx.embed, "__self__", None), "info", None)
    # The long-text method is part of what a distance means (harness.score.embedder): in the key.
    ctx.embedder_sha = f"{info.sha256}|{info.method}" if info is not None else str(s.embedder)
    engine = engine_of(ctx.cell.variant)
    ctx.note(engine_name=engine, capture=effective_capture(engine, s.capture))
    ctx.key = cell_key(ctx.record, s.lengths, DECODER_VERSION, s.batching, s.libraries, s.device)
    ctx.rkey = results_key(ctx.key, s.pairs, s.lengths, entry.scaffold.model_dump() if entry.scaffold else None,
                           entry.name, ctx.embedder_sha, s.store_full_dist, s.twin)
    if not Memo(s.cache_dir).restore_files(RESULTS, ctx.rkey, _RESULT_FILES, ctx.out):
        return False
    # Same decodes, same pairs, same scorer and embedder: the scored tables are
    # the ones already computed; nothing is decoded, embedded or re-scored.
    ctx.note(status="ok", cache_key=ctx.key, results_key=ctx.rkey, results_from_cache=True,
             decoded_prompts=0, cached_prompts=len(ctx.reqs), weights_loaded=False)
    ctx.timed("decode", t)
    return True


def _decode(ctx: CellContext) -> list:
    """Stage 4: generations for every request (cache, then the engine), traces completed, cache updated."""
    s, loaded, t = ctx.settings, ctx.loaded, time.perf_counter()
    decoder = CellDecoder(loaded, s, ctx.record.engine_name, ctx.record.capture, ctx.cell.entry, ctx.cell.variant,
                          ctx.loader)
    try:
        gens, decoded, cached, engine_run, fresh_keys = _decode_with_cache(loaded, ctx.reqs, s, ctx.key,
                                                                           f"decode {ctx.cell.name}", decoder)
        _check_finite(gens)  # cached decodes too: a cache written before this check may hold them
        # Traces at the steps the pairs read, full prompt-end rows for the pair divergences (harness.run.complete).
        gens, counts, again = complete(loaded, gens, ctx.reqs, kept_pairs(s.pairs, ctx.rows), ctx.sides, s.lengths,
                                       decoder.redecode, decoder.prompt_ends, decoder.fill)
    finally:
        decoder.close()
        ctx.worker_warnings = decoder.third_party_warnings()
    ctx.note(workers=decoder.record())
    ctx.note(decode_completion=counts)
    _store_generations(s, ctx.key, gens, ctx.reqs, fresh_keys | again)
    ctx.timed("decode", t)
    ctx.note(
        # How the tokens were chosen and read; None when every prompt came from the cache.
        engine=None if engine_run is None else dataclasses.asdict(engine_run),
        probe=agreement_summary(gens),
        weights_loaded=decoder.weights_loaded,  # False when every prompt came from the cache
        stability_traces=loaded.stability_note,
        # The closed-form head checked against the model's logits (harness.decode.greedy.check_trace_head), and
        # how often its top-1 is not greedy's (near-ties: the traces there describe another token).
        trace_head_check=loaded.head_check,
        trace_head_top1_disagreements=head_top1_disagreements(gens))
    ctx.timed("load_weights", seconds=loaded.weights_seconds)
    ctx.note(cache_key=ctx.key, decoded_prompts=decoded, cached_prompts=cached,
             generated_tokens=int(sum(len(g.gen_ids) for g in gens)))
    return gens


def _score(ctx: CellContext, gens: list, twin=None) -> tuple[list, list]:
    """Stage 5: every kept pair scored at every length (the embedder's load timed on its own)."""
    owner = getattr(ctx.embed, "__self__", None)
    if owner is not None and getattr(owner, "loaded", True) is False:
        # Like the decode model's load, the embedder's load is not scoring work: timed on its own.
        t = time.perf_counter()
        try:
            _ = owner.model
        except Exception as exc:  # after the decodes: say where they are (stored by _decode, unless --no-cache)
            kept = ("the decodes are in the generation cache: a rerun with a working --embedder decodes nothing"
                    if Memo(ctx.settings.cache_dir).root is not None else "--no-cache: a rerun decodes again")
            raise RuntimeError(f"embedder {owner.info.path} failed to load ({error_line(exc)}); {kept}") from exc
        ctx.timed("load_embedder", t)
    t = time.perf_counter()
    tok = ctx.loaded.tokenizer
    decode_text = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    scored, scores, texts = score_generations(ctx.settings.pairs, ctx.rows, ctx.sides, gens, ctx.settings.lengths,
                                              decode_text, ctx.cell.entry.scaffold, ctx.embed, twin)
    ctx.note(embedded_texts=len(texts))
    if owner is not None and texts:
        # MiniLM reads 256 word pieces; longer texts are embedded whole as overlapping windows. Counted.
        ctx.note(embedder_windowed_texts=owner.count_windowed(texts), embedder_long_text=owner.info.method)
    ctx.timed("score", t)
    return scored, scores


def _write_tables(ctx: CellContext, gens: list, scored, scores: list) -> None:
    """Stage 6: the cell's three tables, and the same files into the results cache."""
    s = ctx.settings
    prompt_ids = {}
    for p in s.pairs:
        if p.pair_id in ctx.sides:  # kept pairs, in ladder order
            prompt_ids.setdefault(ctx.sides[p.pair_id][0], p.prompt_id)
    gframe = generations_frame(gens, s.lengths, scored, full_dist=s.store_full_dist)
    gframe["prompt_id"] = [prompt_ids.get(k, "") for k in gframe["prompt_key"]]
    rundir.atomic_write_parquet(ctx.out / "audit.parquet", _frame(ctx.rows, AuditRow))
    rundir.atomic_write_parquet(ctx.out / "generations.parquet", gframe)
    rundir.atomic_write_parquet(ctx.out / "pairs.parquet", pairs_frame(scores))
    Memo(s.cache_dir).store_files(RESULTS, ctx.rkey, _RESULT_FILES, ctx.out)
    ctx.note(results_key=ctx.rkey, status="ok")


FAILED_NUMERICS = "failed-numerics"
"""Cell status when the model produced NaN/inf logits or hidden states (harness.decode.records.NonFiniteOutput)."""


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


def _write_record(ctx: CellContext, before: dict[str, int]) -> CellRecord:
    """cell.json, last: with this cell's cache rejections and failed cache writes (harness.core.checked)."""
    now = cache_counts()
    failures = now["write_failures"] - before["write_failures"]
    ctx.note(cache_entries_rejected=now["rejected"] - before["rejected"], cache_write_failures=failures,
             **({"cache_write_error": first_write_error()} if failures else {}))
    rundir.atomic_write_json(ctx.out / CELL_RECORD, ctx.record.to_json_dict())
    return ctx.record


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


def read_cell_record(run_dir: Path, cell: Cell) -> CellRecord | None:
    """A finished cell's record, or None; a damaged one (or one of an older schema) is an input error naming
    the file (exit 2)."""
    from harness.core.rundir_read import load_cell_record

    path = cell_dir(run_dir, cell) / CELL_RECORD
    return load_cell_record(path) if path.is_file() else None
