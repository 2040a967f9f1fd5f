"""Decode = engine + capture: which engine chooses the tokens, and where the per-step readings come from.

``hf`` + ``generate``: transformers ``generate`` with in-generation capture
(harness.decode.greedy). ``hf`` + ``probe``: the same tokens, readings from the
teacher-forced probe (harness.decode.probe). ``vllm``: vLLM chooses the tokens
(harness.decode.vllm_engine), the probe reads them (vLLM gives ids only). With the
probe, every output records whether the HF model's argmax reproduces the
engine's tokens; the tokens themselves are never changed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from harness.decode.greedy import DEFAULT_BATCH_SIZE, Generation, check_trace_head, decode_all
from harness.decode.records import EngineOutput, EngineRun, ProbeInput
from harness.decode.probe import PROBE_VERSION, teacher_forced

ENGINES = ("hf", "vllm")
CAPTURES = ("generate", "probe")


def effective_capture(engine: str, capture: str) -> str:
    """vLLM returns ids only: its readings always come from the probe."""
    return "probe" if engine == "vllm" else capture


def probe_generations(loaded, outputs: Sequence[EngineOutput], lengths: Sequence[int], engine: str,
                      progress: Callable[[int], None] | None = None) -> list[Generation]:
    """Generation records whose per-step readings are the probe's, one teacher-forced forward per output."""
    tok, info = loaded.tokenizer, loaded.info

    def check(head, h0, logits0):
        # Once per cell, as for generate: the closed-form head against the logits the probe took its argmax over.
        return check_trace_head(loaded, head, h0, logits0) if getattr(loaded, "head_check", None) is None else head

    gens = []
    for o in outputs:
        head = loaded.stability_head()  # None after a failed check: the rest of the cell's traces stay nan
        r = teacher_forced(loaded.model, ProbeInput(tuple(o.request.token_ids), o.tokens), lengths, head, check)
        a = r.agreement
        gen_ids = o.gen_ids
        gens.append(Generation(
            model=info.name, variant=info.variant, prompt_key=o.request.prompt_key, replicate=o.request.replicate,
            rendered_text=o.request.rendered_text, n_prompt_tokens=len(o.request.token_ids), gen_ids=gen_ids,
            gen_text=tok.decode(list(gen_ids), skip_special_tokens=False), stop_reason=o.stop_reason,
            trace_top1_id=r.top1_id, trace_top1_logit=r.top1_logit, trace_top2_id=r.top2_id, trace_top2_logit=r.top2_logit,
            prompt_end_logprobs=r.prompt_end_logprobs, hidden_means=r.hidden_means, trace_delta_tcb=r.delta_tcb,
            trace_flip_radius=r.flip_radius, trace_flip_rival=r.flip_rival, trace_head_top1_id=r.head_top1_id,
            trace_steps=tuple(range(len(r.top1_id))), engine=engine, capture="probe",  # the probe evaluates every step
            probe_agreement=a.share, probe_first_disagreement=a.first_disagreement,
            probe_margin_at_disagreement=a.margin_at_disagreement, probe_engine_token=a.engine_token,
            probe_token=a.probe_token,
        ))
        if progress:
            progress(1)
    return gens


def hf_engine_run(loaded, seconds: float, tokens: int, batching: str) -> EngineRun:
    import torch
    import transformers

    used = getattr(loaded, "batching_used", None) or batching
    notes = {"rows": "rows batching: mixed lengths, attention per equal-length group on its own positions, never one "
                     "row (bitwise equal to bucket batching as tested, see harness.decode.rows)",
             "bucket": "bucket batching: exact-length batches, never one row (batch-invariant on CPU as measured, see "
                       "harness.decode.greedy)",
             "padded": "padded batching: left padding changes bf16 reductions"}
    note = notes[used]
    if used != batching:
        note += f"; asked for {batching}: {getattr(loaded, 'rows_unsupported', None)}"
    inv = getattr(loaded, "linear_invariance", None)
    if inv is not None:
        note += f"; {inv.note()}"
    return EngineRun(engine="hf", version=f"transformers {transformers.__version__}",
                     args={"attn_implementation": loaded.info.attn_implementation, "dtype": loaded.info.dtype,
                           "batching": used, "linear_chunk_rows": inv.chunk_rows if inv is not None else None},
                     env={}, attention_backend=loaded.info.attn_implementation, batch_invariant=used != "padded",
                     batch_invariant_note=note,
                     load_seconds=loaded.weights_seconds, decode_seconds=round(seconds, 3), generated_tokens=tokens,
                     torch_threads=torch.get_num_threads())


def decode_with_engine(loaded, requests, max_new_tokens: int, lengths: Sequence[int],
                       batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None,
                       batching: str = "rows", engine: str = "hf",
                       capture: str = "generate", traces: str = "all") -> tuple[list[Generation], EngineRun]:
    """Every request decoded by ``engine``, read by ``capture``; returns the records and how the engine ran.

    ``traces``: passed to :func:`~harness.decode.greedy.decode_all` for the generate capture (``"deferred"``:
    filled later at the steps read, harness.decode.traces); the probe evaluates every step.
    """
    import time

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
    if capture not in CAPTURES:
        raise ValueError(f"unknown capture {capture!r} (expected one of {', '.join(CAPTURES)})")
    capture = effective_capture(engine, capture)
    t0 = time.perf_counter()
    if engine == "vllm":
        from harness.decode.vllm_engine import vllm_decode

        outputs, run = vllm_decode(loaded.entry, loaded.info, requests, max_new_tokens, batch_size)
        return probe_generations(loaded, outputs, lengths, engine, progress), run
    gens = decode_all(loaded, requests, max_new_tokens, lengths, batch_size, None if capture == "probe" else progress, batching,
                      traces if capture == "generate" else "deferred")
    run = hf_engine_run(loaded, time.perf_counter() - t0, int(sum(len(g.trace_top1_id) for g in gens)), batching)
    if capture == "generate":
        return gens, run
    by_key = {(r.prompt_key, r.replicate): r for r in requests}
    outputs = [EngineOutput(by_key[(g.prompt_key, g.replicate)], tuple(int(t) for t in g.trace_top1_id), g.stop_reason)
               for g in gens]
    return probe_generations(loaded, outputs, lengths, engine, progress), run


def agreement_summary(gens: Sequence[Generation]) -> dict:
    """Per cell, for the manifest: how many probed outputs the probe reproduced step for step."""
    probed = [g for g in gens if g.capture == "probe"]
    if not probed:
        return {"probed_outputs": 0}
    share = np.array([g.probe_agreement for g in probed], dtype=np.float64)
    steps = np.array([len(g.trace_top1_id) for g in probed])
    return {
        "probe_version": PROBE_VERSION,
        "probed_outputs": len(probed),
        "outputs_fully_agreeing": int((share == 1.0).sum()),
        "steps": int(steps.sum()),
        "agreeing_steps": int(np.rint(share * steps).sum()),
        "first_disagreements": [dataclasses.asdict(_Disagreement(g.prompt_key, g.replicate, g.probe_first_disagreement,
                                                                 g.probe_margin_at_disagreement))
                                for g in probed if g.probe_first_disagreement >= 0][:20],
    }


@dataclasses.dataclass(frozen=True)
class _Disagreement:
    prompt_key: str
    replicate: int
    step: int
    margin: float
