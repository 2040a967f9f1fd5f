"""llama.cpp beside HF on SmolLM2-135M-Instruct: greedy tokens/s, same prompts, one run, one thread.

Requests: the task ladder's (``ladders/tasks-small.yaml``) distinct prompts as
the harness renders them for ``smollm2-135m-instruct`` (the first 24; 12 with
``--quick``), greedy to 32 new tokens. Timed in this process, one after the
other, on one thread each: the HF engine (``harness.decode.greedy.decode_all``,
bucket batches of 16, bf16) and the llamacpp engine
(``LlamacppEngine.decode_ids``: one sequence at a time, float32 compute) on the
F16, Q8_0 and Q4_K_M GGUFs made from the same bf16 weights (made before the
timing: their making is not timed). vLLM's figures are bench_engines' (its own
environment, transformers <5.20). Also: outputs where llama.cpp F16 chose HF
bf16's tokens. No target: PASS means "measured"; without llama-cpp-python the
row is a FAIL with the reason.
"""

from __future__ import annotations

import time

from benchmarks.common import REPO, Outcome, Row

GGUFS = ("f16@llamacpp", "q8_0@llamacpp", "q4_k_m@llamacpp")


def _requests(loaded, n: int):
    from harness.audit.tokens import audit_pairs
    from harness.ladder.load import load_ladder
    from harness.decode.requests import decode_requests

    ladder = load_ladder(str(REPO / "ladders" / "tasks-small.yaml"))
    rows, rendered = audit_pairs(loaded.info.name, loaded.tokenizer, loaded.policy, ladder.pairs, max_new_tokens=32)
    reqs, _ = decode_requests(ladder.pairs, rows, rendered)
    return sorted((r for r in reqs if r.replicate == 0), key=lambda r: r.prompt_key)[:n]


def run(quick: bool = False) -> Outcome:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        reason = "llama-cpp-python is not installed (make install-llamacpp)"
        return Outcome([Row("llamacpp", reason, "side by side", None, "-", False)], {"error": reason})
    from harness.core.threads import torch_threads
    from harness.decode.engine_llamacpp import LlamacppEngine, gguf_for
    from harness.decode.greedy import decode_all
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    max_new = 32
    with torch_threads(1):
        hf = load_model(entry, "bf16")
        reqs = _requests(hf, 12 if quick else 24)
        decode_all(hf, reqs[:2], 4, (4,), 16)  # warm-up, untimed
        t = time.perf_counter()
        gens = decode_all(hf, reqs, max_new, (max_new,), 16)
        hf_s = time.perf_counter() - t
        hf_tokens = sum(len(g.trace_top1_id) for g in gens)
        hf_by = {g.prompt_key: tuple(int(x) for x in g.trace_top1_id) for g in gens}
        results = {"model": entry.name, "requests": len(reqs), "max_new_tokens": max_new, "threads": 1,
                   "hf_s": hf_s, "hf_tokens": hf_tokens, "hf_tok_s": hf_tokens / hf_s, "llamacpp": {}}
        for v in GGUFS:
            loaded = load_model(entry, v, lazy=True)
            _, rec = gguf_for(loaded, 1)  # made (once) outside the timing
            eng = LlamacppEngine("llamacpp")
            try:
                outs, erun = eng.decode_ids(loaded, reqs, max_new)
            finally:
                eng.shutdown()
            results["llamacpp"][v] = {
                "decode_s": erun.decode_seconds, "load_s": erun.load_seconds, "tokens": erun.generated_tokens,
                "tok_s": erun.generated_tokens / erun.decode_seconds, "bits_per_parameter": rec["bits_per_parameter"],
                "outputs_equal_hf": sum(o.tokens == hf_by.get(o.request.prompt_key) for o in outs),
                "version": erun.version}
    rows = []
    for v, r in results["llamacpp"].items():
        ratio = r["tok_s"] / results["hf_tok_s"]
        rows.append(Row(f"llamacpp_{v.split('@')[0]}_smollm2",
                        f"llama.cpp {v} {r['tok_s']:.0f} tok/s vs hf bf16 {results['hf_tok_s']:.0f} tok/s",
                        "side by side (no target)", ratio, f"{ratio:.2f}x", True,
                        info=[f"{v}: {results['requests']} requests x <= {max_new} tokens, one thread; "
                              f"{r['bits_per_parameter']} bits/parameter; outputs equal to HF bf16's "
                              f"{r['outputs_equal_hf']}/{results['requests']}; {r['version']}. Shared machine: "
                              f"figures as measured under load."]))
    return Outcome(rows, {"llamacpp": results})
