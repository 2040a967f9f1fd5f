"""Teacher-forced drift of a llama.cpp variant: its GGUF read on the HF reference's greedy tokens.

llama.cpp's ``--kl-divergence`` in the harness's terms: the reference (HF
bf16) and the GGUF (llama.cpp, ``logits_all=True``) are fed the same ids --
the prompt as the harness rendered it and the reference's greedy output -- and
compared position by position with the same statistics as any variant
(harness.score.tf_drift.step_divergence / summarize). ``f16@llamacpp`` read so
is the engine floor: what llama.cpp and the file format change before any
quantization.
"""

from __future__ import annotations

from typing import Sequence

from harness.score.tf_drift import step_divergence, summarize


def llamacpp_rows(ref_loaded, var_loaded, items: Sequence[tuple[str, Sequence[int], Sequence[int]]],
                  lengths: Sequence[int]) -> list[dict[str, object]]:
    """One row per (prompt key, length), as harness.score.tf_drift.teacher_forced_rows, the variant read by llama.cpp."""
    import torch

    from harness.decode.engine_llamacpp import gguf_for, gguf_step_logits, open_gguf
    from harness.decode.engines import get_engine
    from harness.decode.probe import step_logits

    engine = get_engine("llamacpp")
    engine.check_installed()
    threads = torch.get_num_threads()
    path, _ = gguf_for(var_loaded, threads)
    n_ctx = max((len(p) + len(t) for _, p, t in items), default=1) + 1
    llm = open_gguf(path, n_ctx, threads, logits_all=True)
    rows: list[dict[str, object]] = []
    try:
        for key, prompt_ids, tokens in items:
            ref = step_logits(ref_loaded.model, prompt_ids, tokens)
            var = torch.from_numpy(gguf_step_logits(llm, prompt_ids, tokens))
            if var.shape[-1] != ref.shape[-1]:
                # A padded HF head: the extra columns are never a real token, llama.cpp has none of them.
                if ref.shape[-1] < var.shape[-1]:
                    raise ValueError(f"llama.cpp vocabulary {var.shape[-1]} larger than the HF head {ref.shape[-1]}")
                ref = ref[:, :var.shape[-1]]
            d = step_divergence(ref, var.to(ref.device), tokens)
            rows += [{"prompt_key": key, "length": int(L), **summarize(d, L)} for L in lengths]
    finally:
        llm.close()
    return rows
