"""Teacher-forced drift against the decode it reads, on SmolLM2-135M-Instruct: seconds per prompt, one run.

Requests: the task ladder's (``ladders/tasks-small.yaml``) distinct prompts as
the harness renders them for ``smollm2-135m-instruct`` (the first 48; 16 with
``--quick``), greedy to 32 new tokens. Timed in this process, one after the
other, on one thread, weights loaded before each timing, in process CPU
seconds (on one thread what the work costs, whatever else the shared machine
runs; wall seconds are recorded beside them):

- the decode of each variant (bf16, bitsandbytes int8, bitsandbytes nf4) as a
  cell runs it (``harness.decode.greedy.decode_all``: rows batching, deferred
  traces, fixed-size linear chunks where the probe asks for them);
- teacher-forced drift of int8 and int4 on bf16's tokens as the merge runs it
  (``harness.score.tf_drift.teacher_forced_rows`` under ``invariant_linears``):
  rows batching (outputs of every length in one forward per model), and, for
  the record, the former one-shape-per-forward batching (``shape``).

Target (issue 30): drift of a variant at most half the decode time of that
variant's cell (``drift / decode <= 0.5``). The drift reads both models, so
the row also prints the ratio against the two cells it reads (reference +
variant).
"""

from __future__ import annotations

import time

from benchmarks.common import REPO, Outcome, Row

VARIANTS = ("int8", "int4")
TARGET = 0.5


def _requests(loaded, n: int):
    from harness.audit.tokens import audit_pairs
    from harness.decode.requests import decode_requests
    from harness.ladder.load import load_ladder

    ladder = load_ladder(str(REPO / "ladders" / "tasks-small.yaml"))
    rows, rendered = audit_pairs(loaded.info.name, loaded.tokenizer, loaded.policy, ladder.pairs, max_new_tokens=32)
    reqs, _ = decode_requests(ladder.pairs, rows, rendered)
    return sorted((r for r in reqs if r.replicate == 0), key=lambda r: r.prompt_key)[:n]


def _cpu(fn):
    """(process CPU seconds, wall seconds, result): on one thread the CPU seconds are what the work costs, whatever
    else the shared machine runs; the wall seconds are reported beside them."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def _decode_s(loaded, reqs, max_new: int) -> tuple[float, float, list]:
    from harness.decode.greedy import decode_all

    decode_all(loaded, reqs[:2], 4, (4,), traces="deferred")  # warm-up and the invariance probe, untimed
    return _cpu(lambda: decode_all(loaded, reqs, max_new, (max_new,), traces="deferred"))


def _drift_s(ref, q, items, lengths, batching: str) -> tuple[float, float, list]:
    from harness.decode.invariant import invariant_linears
    from harness.score.tf_drift import teacher_forced_rows

    with invariant_linears(ref), invariant_linears(q):
        teacher_forced_rows(ref.model, q.model, items[:2], lengths, batching=batching)  # warm-up, untimed
        return _cpu(lambda: teacher_forced_rows(ref.model, q.model, items, lengths, batching=batching))


def run(quick: bool = False) -> Outcome:
    import logging
    import os

    from harness.core.noise import once_each
    from harness.core.threads import torch_threads
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    max_new, lengths = 32, (32,)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    with torch_threads(1), once_each():
        ref = load_model(entry, "bf16")
        reqs = _requests(ref, 16 if quick else 48)
        ref_s, ref_w, gens = _decode_s(ref, reqs, max_new)
        ids = {r.prompt_key: tuple(r.token_ids) for r in reqs}
        items = [(g.prompt_key, ids[g.prompt_key], tuple(int(t) for t in g.trace_top1_id)) for g in gens]
        out = {"model": entry.name, "requests": len(reqs), "max_new_tokens": max_new, "threads": 1,
               "load_avg_start": os.getloadavg()[0], "clock": "process CPU seconds (one thread); *_wall_s: wall",
               "decode_s": {"bf16": ref_s}, "decode_wall_s": {"bf16": ref_w}, "drift_s": {}, "drift_wall_s": {},
               "shape_drift_s": {},
               "input_positions": sum(len(p) + len(t) - 1 for _, p, t in items)}
        for v in VARIANTS:
            q = load_model(entry, v)
            out["decode_s"][v], out["decode_wall_s"][v], _ = _decode_s(q, reqs, max_new)
            out["drift_s"][v], out["drift_wall_s"][v], rows = _drift_s(ref, q, items, lengths, "rows")
            shape_items = items[:16]  # the former batching, for the record
            s, _, _ = _drift_s(ref, q, shape_items, lengths, "shape")
            out["shape_drift_s"][v] = s * len(items) / len(shape_items)  # per the same number of prompts
            out.setdefault("tf_kl_mean", {})[v] = sum(r["tf_kl_mean"] for r in rows) / len(rows)
            del q
        out["load_avg_end"] = os.getloadavg()[0]
    n = len(reqs)
    result_rows = []
    for v in VARIANTS:
        d, dec, shape = out["drift_s"][v], out["decode_s"][v], out["shape_drift_s"][v]
        ratio = d / dec
        both = d / (dec + out["decode_s"]["bf16"])
        result_rows.append(Row(
            f"tf_drift_{v}_smollm2",
            f"drift {d / n:.3f} CPU s/prompt vs {v} decode {dec / n:.3f} CPU s/prompt",
            f"<= {TARGET:g}x the decode", ratio, f"{ratio:.2f}x", bool(ratio <= TARGET),
            info=[f"tf_drift_{v}: {n} prompts x <= {max_new} tokens, one thread, SmolLM2-135M bf16 vs bitsandbytes "
                  f"{v}: rows-batched drift {d:.1f} CPU s ({d / n:.3f} s/prompt, wall {out['drift_wall_s'][v]:.1f} s; "
                  f"former one-shape batching "
                  f"{shape / n:.3f} s/prompt (from {min(16, n)} prompts)); decode bf16 "
                  f"{out['decode_s']['bf16'] / n:.3f}, {v} {dec / n:.3f} CPU s/prompt (wall {out['decode_wall_s'][v]:.1f} s); "
                  f"drift over both cells' decode "
                  f"{both:.2f}x. Load average {out['load_avg_start']:.1f} -> {out['load_avg_end']:.1f} (shared "
                  f"machine: ratios are side by side in one process)."]))
    return Outcome(result_rows, {"tf_drift": out})
