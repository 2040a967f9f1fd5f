"""What one decode worker does and holds (a spawned process, a Ray actor, or worker 0 on a thread of the run's
process): harness.run.workers runs it; the calls are ``bind``, ``decode``, ``prompt_ends`` and ``fill_held``."""

from __future__ import annotations

import os
import resource
import time
from typing import Any, Callable

Key = tuple[str, int]


def rss_mb() -> float:
    """Peak resident memory of this process in MiB: VmHWM (ru_maxrss would count the parent's peak too, since
    Linux keeps it across the fork and exec that start a worker)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# -- what a worker does (the same functions serve the local processes and the Ray actors) ----------------------


def worker_state(loaded, inline: bool = False) -> dict[str, Any]:
    """What the worker learnt about the model that the cell record reports (harness.run.cell copies it). ``inline``:
    worker 0 on a thread of the run's process (harness.run.workers_inline): its CPU time is its thread's."""
    cpu = time.thread_time() if inline else time.process_time()
    if loaded is None:
        return {"rss_mb": rss_mb(), "pid": os.getpid(), "cpu_s": cpu, "inline": inline}
    return {"cpu_s": cpu, "batching_used": loaded.batching_used, "rows_unsupported": loaded.rows_unsupported,
            "linear_invariance": loaded.linear_invariance, "head_check": loaded.head_check,
            "stability_status": loaded.stability_status, "weights_seconds": loaded.weights_seconds,
            "weights_loaded": loaded.weights_loaded, "rss_mb": rss_mb(), "pid": os.getpid(), "inline": inline}


def do_decode(loaded, reqs, max_new_tokens, lengths, batch_size, batching, engine, capture, progress=None):
    from harness.decode.engines import decode_with_engine

    return decode_with_engine(loaded, reqs, max_new_tokens, lengths, batch_size, progress, batching, engine, capture,
                              traces="deferred")


def do_prompt_ends(loaded, reqs, batch_size, batching, progress=None):
    from harness.decode.traces import drop_states
    from harness.run.complete import one_token_prompt_ends

    return drop_states(one_token_prompt_ends(loaded, batch_size, batching)(reqs))  # only the prompt-end rows are read


def _warm_imports() -> None:
    """What every cell's bind would import first (tokenizers, the auto classes, the Llama family of the demo and
    SmolLM2 models): measured 2.8 of a demo model's 3.4 s bind; done here it overlaps whatever the run does while
    the pool starts."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - lazy: importing is the point

    for name in ("transformers.models.llama.modeling_llama", "transformers.models.auto.tokenization_auto"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a warm-up only: the bind imports what it needs itself
            pass
    _ = transformers.__version__


class WorkerHost:
    """What one worker holds between calls: the (model, variant) of the cell it serves now (``bind``) and the
    states of the outputs it decoded (``held``), which never cross the pipe: the traces are filled here
    (``fill_held``) at the steps the cell asks for, and only their values go back."""

    def __init__(self, inline: bool = False) -> None:
        """``inline``: on a thread of the run's process (harness.run.workers_inline), which runs one torch thread
        already; its environment and thread count are left as they are."""
        if not inline:
            os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        import harness.decode.engines  # noqa: F401 - the imports are part of the startup, not of the first cell

        if not inline:
            torch.set_num_threads(1)  # the only count measured batch-invariant (harness.core.threads)
        elif torch.get_num_threads() != 1:
            raise RuntimeError(f"an inline decode worker needs one torch thread, this process runs {torch.get_num_threads()}")
        _warm_imports()
        self.loaded, self.inline = None, inline
        self.held: dict[Key, Any] = {}
        self.warned: dict[str, int] = {}
        """Third-party warnings of the cell bound now, shown once in this process and counted (a process of its
        own only: worker 0 inline is inside the cell's own count)."""

    def call(self, method: str, args: tuple, progress: Callable | None = None):
        """:meth:`_call`, with a library that warns per call (bitsandbytes int8: 40 lines a worker) shown once."""
        if self.inline:
            return self._call(method, args, progress)
        from harness.core.noise import once_each

        if method == "bind":
            self.warned = {}  # counts per cell
        seen: dict[str, int] = {}
        try:
            with once_each() as seen:
                result, _ = self._call(method, args, progress)
        finally:
            for k, n in seen.items():
                self.warned[k[:200]] = self.warned.get(k[:200], 0) + n
        return result, self._state()  # the state after the call's own warnings are counted

    def _call(self, method: str, args: tuple, progress: Callable | None = None):
        """(result, state): ``bind`` (entry, variant, loader) loads a model and its weights; the others use it.

        ``decode`` returns (outputs without their states, how the engine ran, the keys whose states are held here);
        ``fill_held`` ({key: steps}, head_ok) returns {key: trace fields} and forgets every held state."""
        if method == "bind":
            import gc

            self.loaded, self.held = None, {}
            gc.collect()  # the previous cell's weights go before the next ones come
            entry, variant, loader = args
            self.loaded = loader(entry, variant)
            _ = self.loaded.model
            return None, self._state()
        if self.loaded is None:
            raise RuntimeError(f"decode worker asked to {method} before any model was bound")
        kwargs = {"progress": progress} if progress is not None and method in ("decode", "prompt_ends") else {}
        if method == "decode":
            import dataclasses

            gens, run = do_decode(self.loaded, *args, **kwargs)
            kept = {(g.prompt_key, g.replicate): g for g in gens if g.states is not None}
            self.held.update(kept)
            return ([dataclasses.replace(g, states=None) for g in gens], run, set(kept)), self._state()
        if method == "fill_held":
            return self._fill_held(*args), self._state()
        if method == "prompt_ends":
            return do_prompt_ends(self.loaded, *args, **kwargs), self._state()
        raise ValueError(f"decode worker: unknown call {method!r}")

    def _state(self) -> dict[str, Any]:
        return {**worker_state(self.loaded, self.inline), "third_party_warnings": dict(self.warned)}

    def _fill_held(self, want: dict, head_ok: bool | None) -> dict:
        from harness.decode.traces import fill_traces, trace_fields

        if head_ok is False and self.loaded.head_check is not None:
            self.loaded.head_check = {**self.loaded.head_check, "ok": False}  # another worker's check failed: no traces
        asked = {k: steps for k, steps in want.items() if steps}
        gens = [self.held[k] for k in asked]  # KeyError: the cell asked for states this worker never decoded
        filled = fill_traces(self.loaded, gens, asked)
        self.held = {}
        return {(g.prompt_key, g.replicate): trace_fields(g) for g in filled}
