"""The ``hf`` engine: transformers ``generate`` (harness.decode.greedy), readings captured while decoding or by the probe."""

from __future__ import annotations

import time
from typing import Sequence

from harness.decode.engines import Engine, Progress
from harness.decode.greedy import Generation, decode_all
from harness.decode.records import DecodeRequest, EngineOutput, EngineRun
from harness.models.loading import LoadedModel

_BATCHING_NOTES = {
    "rows": "rows batching: mixed lengths, attention per equal-length group on its own positions, never one "
            "row (bitwise equal to bucket batching as tested, see harness.decode.rows)",
    "bucket": "bucket batching: exact-length batches, never one row (batch-invariant on CPU as measured, see "
              "harness.decode.greedy)",
    "padded": "padded batching: left padding changes bf16 reductions",
}


class HfEngine(Engine):
    """Greedy ``model.generate`` on the loaded HF model; with the probe capture its tokens are read back teacher-forced."""

    requires = ("transformers",)

    def decode(self, loaded: LoadedModel, requests: Sequence[DecodeRequest], max_new_tokens: int,
               lengths: Sequence[int], batch_size: int, progress: Progress, batching: str, capture: str,
               traces: str) -> tuple[list[Generation] | list[EngineOutput], EngineRun]:
        t0 = time.perf_counter()
        gens = decode_all(loaded, requests, max_new_tokens, lengths, batch_size, progress, batching,
                          traces if capture == "generate" else "deferred")
        run = hf_engine_run(loaded, time.perf_counter() - t0, int(sum(len(g.trace_top1_id) for g in gens)), batching,
                            self.name)
        if capture == "generate":
            return gens, run
        by_key = {(r.prompt_key, r.replicate): r for r in requests}
        return [EngineOutput(by_key[(g.prompt_key, g.replicate)], tuple(int(t) for t in g.trace_top1_id), g.stop_reason)
                for g in gens], run


def hf_engine_run(loaded: LoadedModel, seconds: float, tokens: int, batching: str, name: str = "hf") -> EngineRun:
    """How the HF engine ran: the batching actually used (and why it differs from what was asked), linear chunking."""
    import torch
    import transformers

    used = loaded.batching_used or batching
    note = _BATCHING_NOTES[used]
    if used != batching:
        note += f"; asked for {batching}: {loaded.rows_unsupported}"
    inv = loaded.linear_invariance
    if inv is not None:
        note += f"; {inv.note()}"
    return EngineRun(engine=name, version=f"transformers {transformers.__version__}",
                     args={"attn_implementation": loaded.info.attn_implementation, "dtype": loaded.info.dtype,
                           "batching": used, "linear_chunk_rows": inv.chunk_rows if inv is not None else None},
                     env={}, attention_backend=loaded.info.attn_implementation, batch_invariant=used != "padded" and inv is not None and inv.covered,  # never unmeasured
                     batch_invariant_note=note,
                     load_seconds=loaded.weights_seconds, decode_seconds=round(seconds, 3), generated_tokens=tokens,
                     torch_threads=torch.get_num_threads())
