"""The twin divergence of a cell's pairs (harness.score.twin): its passes planned, run in batches, memoized.

Runs in the cell after the decode, with the cell's own model: per pair, side A's output after prompt A and after
prompt B, and side B's output after prompt B and after prompt A. A pass is named by (whose prompt, whose output),
so side A's own pass is run once for all its pairs; the pair's other passes are its own. Outputs are taken in
windows: first every own pass of the window (with any other pass whose input equals one of them: the identical
rung's copies, which must share a forward to be bitwise equal), then the other passes batch by batch, each
reduced against its output's own pass and dropped, so memory holds the window's own logits and one batch.

Only the HF engine's model is read here: a vLLM or llama.cpp cell leaves the columns NaN, and cell.json's
``twin`` says why. Results are memoized under the decode key and the exact inputs read, so a cached re-run loads
no weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Sequence

import numpy as np

from harness.core.memo import Memo
from harness.ladder.records import PromptPair
from harness.score.records import TwinPass, TwinSteps
from harness.score.twin import LOGIT_BUDGET, TWIN_VERSION, run_passes, twin_steps

log = logging.getLogger(__name__)

Side = tuple[str, int]
"""(prompt key, replicate) of a decoded output."""
Reading = dict[tuple[str, str], TwinSteps]
"""(pair id, direction 'ab' or 'ba') -> the per-step twin divergence."""


def plan(pairs: Sequence[PromptPair], sides: dict[str, tuple[str, str, int]], gens: dict[Side, Any],
         prompt_ids: dict[str, tuple[int, ...]]) -> tuple[list[TwinPass], list[Side], list[tuple[str, str, int, int]]]:
    """(passes, the output each pass reads, comparisons (pair id, direction, own pass, other pass)).

    The passes are distinct by (prompt side, output side): side A's own pass once for all its pairs."""
    index: dict[tuple[Side, Side], int] = {}
    passes: list[TwinPass] = []
    reads: list[Side] = []

    def at(prompt: Side, out: Side) -> int:
        if (prompt, out) not in index:
            index[(prompt, out)] = len(passes)
            passes.append(TwinPass(prompt_ids[prompt[0]], tuple(int(t) for t in gens[out].trace_top1_id)))
            reads.append(out)
        return index[(prompt, out)]

    comps = []
    for p in pairs:
        ka, kb, rep_b = sides[p.pair_id]
        a, b = (ka, 0), (kb, rep_b)
        if not len(gens[a].trace_top1_id) or not len(gens[b].trace_top1_id):
            continue  # nothing generated on a side: nothing to read (the columns stay NaN)
        comps.append((p.pair_id, "ab", at(a, a), at(b, a)))
        comps.append((p.pair_id, "ba", at(b, b), at(a, b)))
    return passes, reads, comps


def compute(model, passes: Sequence[TwinPass], reads: Sequence[Side], comps, vocab: int,
            budget: int = LOGIT_BUDGET, progress: Callable[[int], Any] | None = None) -> Reading:
    """Every comparison's TwinSteps: own passes of a window of outputs first, then the other passes, reduced.
    ``progress(k)``: called after each forward with the number of passes it ran."""
    own_of = {reads[o]: o for _, _, o, _ in comps}
    by_out: dict[Side, list[tuple[str, str, int, int]]] = {}
    for c in comps:
        by_out.setdefault(reads[c[2]], []).append(c)
    order = sorted(by_out, key=lambda s: (len(passes[own_of[s]].prompt_ids), len(passes[own_of[s]].tokens), s))
    out: Reading = {}
    start = 0
    while start < len(order):
        window, size = [], 0
        while start < len(order) and (not window or size + len(passes[own_of[order[start]]].tokens) * vocab <= budget):
            window.append(order[start])
            size += len(passes[own_of[order[start]]].tokens) * vocab
            start += 1
        firsts = {own_of[s] for s in window}
        first_inputs = {(passes[i].prompt_ids, passes[i].tokens) for i in firsts}
        others = {c[3] for s in window for c in by_out[s]} - firsts
        copies = {i for i in others if (passes[i].prompt_ids, passes[i].tokens) in first_inputs}
        phase1 = sorted(firsts | copies)
        held: dict[int, Any] = {}
        for idx, logits in run_passes(model, [passes[i] for i in phase1], vocab, budget):
            for b, j in enumerate(idx):
                held[phase1[j]] = logits[b]
            if progress is not None:
                progress(len(idx))
        for s in window:
            for pid, d, o, t in by_out[s]:
                if t in held:
                    out[(pid, d)] = twin_steps(held[o], held[t], passes[o].tokens)
        rest = sorted(others - copies)
        rest_set = set(rest)
        wanted: dict[int, list[tuple[str, str, int]]] = {}
        for s in window:
            for pid, d, o, t in by_out[s]:
                if t in rest_set:
                    wanted.setdefault(t, []).append((pid, d, o))
        for idx, logits in run_passes(model, [passes[i] for i in rest], vocab, budget):
            for b, j in enumerate(idx):
                for pid, d, o in wanted[rest[j]]:
                    out[(pid, d)] = twin_steps(held[o], logits[b], passes[o].tokens)
            if progress is not None:
                progress(len(idx))
        del held
    return out


def _encode(reading: Reading) -> dict[str, Any]:
    return {f"{pid}\t{d}": [s.kl.tolist(), s.same_top1.astype(int).tolist(), s.llr.tolist()]
            for (pid, d), s in reading.items()}


def _decode(data: dict[str, Any]) -> Reading:
    out: Reading = {}
    for k, (kl, same, llr) in data.items():
        pid, d = k.split("\t")
        out[(pid, d)] = TwinSteps(np.asarray(kl, np.float64), np.asarray(same, bool), np.asarray(llr, np.float64))
    return out


def cell_twin(loaded, engine: str, pairs: Sequence[PromptPair], sides: dict[str, tuple[str, str, int]],
              gens: Sequence[Any], reqs: Sequence[Any], decode_key: str, cache_dir: str | None,
              progress: bool = False, desc: str = "twin") -> tuple[Reading | None, str]:
    """The cell's twin readings (None when the engine cannot give them) and the note for cell.json ``twin``.
    ``progress``: a bar over the teacher-forced passes (none when the readings come from the cache)."""
    if engine != "hf":
        return None, (f"not computed: engine {engine} (the twin passes read the HF model the cell decodes with; "
                      "the columns are NaN)")
    by_key = {(g.prompt_key, g.replicate): g for g in gens}
    ids = {r.prompt_key: tuple(int(i) for i in r.token_ids) for r in reqs}
    passes, reads, comps = plan(pairs, sides, by_key, ids)
    material = [[pid, d, list(passes[o].prompt_ids), list(passes[t].prompt_ids), list(passes[o].tokens)]
                for pid, d, o, t in comps]
    digest = hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()
    hit = [True]

    def run() -> Reading:
        hit[0] = False
        model = loaded.model
        head = model.get_output_embeddings()
        vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
        from tqdm import tqdm

        # Minutes on a real model (1-2x the decode): the bar is what the user sees of them.
        with tqdm(total=len(passes), desc=desc, unit="pass", disable=not progress, leave=True,
                  dynamic_ncols=True) as bar:
            return compute(model, passes, reads, comps, vocab, progress=bar.update)

    reading = Memo(cache_dir).get("twin", [TWIN_VERSION, decode_key, digest], run, encode=_encode, decode=_decode)
    src = "from the cache" if hit[0] else f"{len(passes)} teacher-forced passes"
    return reading, f"ok: {len(comps) // 2} pairs, {src}"


def twin_stage(ctx, gens: Sequence[Any]) -> Reading | None:
    """Stage 4b of a cell (harness.run.cell): the twin readings of its kept pairs with ``--twin`` (None without);
    notes cell.json ``twin`` and ``timings_s.twin``. ``ctx`` is the cell's CellContext."""
    import time

    from harness.score.pairs import kept_pairs

    if not getattr(ctx.settings, "twin", False):
        ctx.note(twin="not computed: --twin not given (the columns are NaN)")
        return None
    log.info("%s--%s: teacher-forced twin passes", ctx.record.name, ctx.record.variant)
    t = time.perf_counter()
    reading, note = cell_twin(ctx.loaded, ctx.record.engine_name or "hf", kept_pairs(ctx.settings.pairs, ctx.rows),
                              ctx.sides, gens, ctx.reqs, ctx.key, ctx.settings.cache_dir,
                              progress=bool(getattr(ctx.settings, "progress", False)),
                              desc=f"twin {ctx.record.name}--{ctx.record.variant}")
    ctx.note(twin=note)
    ctx.timed("twin", t)
    return reading
