"""llama.cpp (llama-cpp-python) as a decode engine: a GGUF file decoded greedily on CPU.

Choices, each for comparability or for a clear failure:
- the GGUF is made by llama.cpp's own tools from the model's bf16 directory
  (harness.models.gguf_build: convert_hf_to_gguf.py, then llama_model_quantize),
  memoized by sha256; its record (file type, effective bits per parameter,
  tensor types, llama.cpp version) goes into the manifest under ``engine.args.gguf``;
- llama.cpp is fed the token ids the harness's template rendering gave, never
  its own chat formatting or tokenizer, so that engines differ only in
  arithmetic (SmolLM2's shipped Q4_1 answers "capital of France" with
  "L'Étoile" in llama.cpp and "Paris" in transformers on the *same* ids: the
  8-bit activations of llama.cpp's Q4_1 dot product, README "llama.cpp");
- greedy is argmax of llama.cpp's float32 logits at each step, taken here (the
  first index on ties, like torch.argmax), with no sampler, no prefix cache and
  the KV cache cleared per request: each replicate of the identical rung is its
  own decode, so that rung measures llama.cpp's run-to-run determinism;
- llama.cpp returns ids to the harness; the probe reads them with the HF model
  (``probe_only``, as for vLLM) and records agreement;
- threads: the thread count in force for the decode (torch's, set by the
  thread policy: ``--threads``), passed as ``n_threads`` and ``n_threads_batch``;
  ``n_batch`` (prompt tokens per llama_decode) recorded. Both are in the manifest.

Teacher-forced readings (harness.run.tf_drift): :func:`gguf_step_logits` opens
the same file with ``logits_all=True`` and returns every position's logits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.decode.engines import Engine, EngineUnavailable, Progress
from harness.decode.records import DecodeRequest, EngineOutput, EngineRun
from harness.models.loading import LoadedModel

N_BATCH = 512
"""Prompt tokens per llama_decode call (llama.cpp's default)."""
INSTALL_HINT = "install it with `make install-llamacpp` (or pip install 'stabprobe[llamacpp]'), see README 'Engines'"


def variant_weights(variant: str) -> str:
    from harness.models.variants import parse_variant

    return parse_variant(variant).weights


def gguf_for(loaded: LoadedModel, threads: int = 1) -> tuple[Path, dict[str, Any]]:
    """The GGUF of ``loaded``'s variant, made from its bf16 directory (once); EngineUnavailable with one line otherwise."""
    from harness.models.gguf_build import GgufBuildError, build_gguf

    entry, info = loaded.entry, loaded.info
    if not entry.is_local:
        raise EngineUnavailable(f"the llamacpp engine converts a local model directory; {entry.name} is a hub id "
                                f"(download it first)")
    try:
        return build_gguf(Path(entry.source), info.resolved_revision or info.weights_sha256 or "",
                          variant_weights(info.variant), threads)
    except GgufBuildError as exc:
        raise EngineUnavailable(str(exc)) from None


def open_gguf(path: Path, n_ctx: int, threads: int, logits_all: bool):
    """A llama_cpp.Llama on ``path``; EngineUnavailable (one line) when llama.cpp refuses the file."""
    import llama_cpp

    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=int(n_ctx), n_batch=N_BATCH, n_ubatch=N_BATCH,
                               n_threads=int(threads), n_threads_batch=int(threads), logits_all=logits_all, seed=0,
                               n_gpu_layers=0, verbose=False)
    except Exception as exc:  # noqa: BLE001 - e.g. an architecture this llama.cpp does not know
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise EngineUnavailable(f"llama.cpp could not load {path.name}: {text[:300]}") from None


def _last_logits(llm) -> np.ndarray:
    """The logits after the last evaluated token, whichever way the context was opened."""
    if llm._logits_all:
        # Every row of the last batch is kept and llama_get_logits points at its *first* row (after a whole prompt:
        # the prediction after the prompt's first token); llama-cpp-python copies each row into ``scores``.
        return llm.scores[llm.n_tokens - 1]
    # logits_all=False: llama.cpp keeps the last position's row only (llama-cpp-python no longer copies it).
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def greedy_ids(llm, prompt: Sequence[int], max_new_tokens: int, eos: set[int]) -> tuple[tuple[int, ...], str]:
    """Greedy tokens after ``prompt`` (argmax of each step's logits), fresh KV cache; and why it stopped."""
    llm.reset()
    llm.eval(list(prompt))
    out: list[int] = []
    for _ in range(int(max_new_tokens)):
        tok = int(np.argmax(_last_logits(llm)))
        out.append(tok)
        if tok in eos:
            return tuple(out), "eos"
        if len(out) == max_new_tokens:
            break
        llm.eval([tok])
    return tuple(out), "length"


def gguf_step_logits(llm, prompt: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """[len(tokens), V] float32 logits predicting each of ``tokens`` after ``prompt`` (``logits_all=True`` model)."""
    llm.reset()
    ids = list(prompt) + list(tokens)
    llm.eval(ids[:-1] if tokens else ids)  # the last token's own next-token logits are never read
    start = len(prompt) - 1
    return np.array(llm.scores[start:start + len(tokens)], dtype=np.float32, copy=True)


class LlamacppEngine(Engine):
    """llama.cpp decodes the variant's GGUF greedily on CPU; the probe reads its tokens with the HF model."""

    requires = ("llama_cpp",)
    missing = "llama-cpp-python is not installed ({module}); " + INSTALL_HINT
    probe_only = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._llm = None

    def refusal(self, info) -> str | None:
        from harness.models.gguf_build import FILE_TYPES

        weights = variant_weights(info.variant)
        if weights not in FILE_TYPES:
            return f"the llamacpp engine decodes GGUF files ({', '.join(FILE_TYPES)}), not {weights}"
        return None

    def decode(self, loaded: LoadedModel, requests: Sequence[DecodeRequest], max_new_tokens: int,
               lengths: Sequence[int], batch_size: int, progress: Progress, batching: str, capture: str,
               traces: str) -> tuple[list[EngineOutput], EngineRun]:
        """Greedy ids for every request (``batch_size``, ``batching``, ``traces``: the HF engine's; llama.cpp
        decodes one sequence at a time here)."""
        return self.decode_ids(loaded, requests, max_new_tokens)

    def decode_ids(self, loaded: LoadedModel, requests: Sequence[DecodeRequest],
                   max_new_tokens: int) -> tuple[list[EngineOutput], EngineRun]:
        import torch

        threads = torch.get_num_threads()
        t0 = time.perf_counter()
        path, rec = gguf_for(loaded, threads)
        n_ctx = max((len(r.token_ids) for r in requests), default=1) + int(max_new_tokens) + 1
        self._llm = llm = open_gguf(path, n_ctx, threads, logits_all=False)
        vocab = llm.n_vocab()
        load_s = time.perf_counter() - t0
        eos = set(loaded.info.eos_token_ids)
        outputs: list[EngineOutput] = []
        t1 = time.perf_counter()
        for r in requests:
            if any(not 0 <= t < vocab for t in r.token_ids):
                raise EngineUnavailable(f"{path.name}: the rendered prompt has token ids outside llama.cpp's "
                                        f"vocabulary of {vocab} (tokenizer and GGUF disagree)")
            tokens, stop = greedy_ids(llm, r.token_ids, max_new_tokens, eos)
            outputs.append(EngineOutput(r, tokens, stop))
        decode_s = time.perf_counter() - t1
        from harness.models.gguf_build import llamacpp_version

        run = EngineRun(
            engine=self.name, version=llamacpp_version(),
            args={"model_path": str(path), "n_ctx": n_ctx, "n_batch": N_BATCH, "n_ubatch": N_BATCH,
                  "n_threads": threads, "n_threads_batch": threads, "sequences_per_decode": 1, "seed": 0,
                  "sampling": "argmax of float32 logits (no sampler)", "gguf": rec},
            env={}, attention_backend="llama.cpp CPU (ggml)", batch_invariant=True,
            batch_invariant_note="one sequence per llama_decode and the KV cache cleared per request: no batch to "
                                 "vary (the identical rung measures run-to-run determinism)",
            load_seconds=round(load_s, 3), decode_seconds=round(decode_s, 3),
            generated_tokens=int(sum(len(o.tokens) for o in outputs)), torch_threads=threads)
        return outputs, run

    def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
