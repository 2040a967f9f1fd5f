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
  (``harness.score.tf_drift.teacher_forced_many`` under ``invariant_linears``,
  TF_VERSION 3): both variants read together, each forward chunk reading bf16
  once for both, the prefix every output of a forward shares (SmolLM2's
  system prompt) computed once; each variant also read alone (its own bf16
  forward) and, for the record, alone without the shared prefix
  (``rows-full``: every position of every output in the forward).

Target (issue 30): drift at most half the decode time of the cells it reads
(the reference cell and the variant cell). Per variant, as the merge reads it
(both variants beside one bf16 forward): its own forwards plus half of bf16's
forwards and of the divergences, ``<= 0.5 x (decode_bf16 + decode_v)``; for
both together, ``drift <= 0.5 x sum over v of (decode_bf16 + decode_v)``. The
notes give each variant read alone (a run with one variant pays that).
"""

from __future__ import annotations

import time

from benchmarks.common import REPO, Outcome, Row

VARIANTS = ("int8", "int4")
TARGET = 0.5


def _requests(loaded, n: int, max_new: int = 32):
    from harness.audit.tokens import audit_pairs
    from harness.decode.requests import decode_requests
    from harness.ladder.load import load_ladder

    ladder = load_ladder(str(REPO / "ladders" / "tasks-small.yaml"))
    rows, rendered = audit_pairs(loaded.info.name, loaded.tokenizer, loaded.policy, ladder.pairs,
                                 max_new_tokens=max_new)
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


def _drift_s(ref, qs: dict, items, lengths, batching: str, clock: dict | None = None) -> tuple[float, float, dict]:
    from contextlib import ExitStack

    from harness.decode.invariant import invariant_linears
    from harness.score.tf_drift import teacher_forced_many

    with ExitStack() as stack:
        for x in (ref, *qs.values()):
            stack.enter_context(invariant_linears(x))
        models = {v: q.model for v, q in qs.items()}
        teacher_forced_many(ref.model, models, items[:2], lengths, batching=batching)  # warm-up, untimed
        return _cpu(lambda: teacher_forced_many(ref.model, models, items, lengths, batching=batching, clock=clock))


def run(quick: bool = False, max_new: int = 32) -> Outcome:
    import logging
    import os

    from harness.core.noise import once_each
    from harness.core.threads import torch_threads
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    lengths = (max_new,)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    with torch_threads(1), once_each():
        ref = load_model(entry, "bf16")
        reqs = _requests(ref, 16 if quick else 48, max_new)
        ref_s, ref_w, gens = _decode_s(ref, reqs, max_new)
        ids = {r.prompt_key: tuple(r.token_ids) for r in reqs}
        items = [(g.prompt_key, ids[g.prompt_key], tuple(int(t) for t in g.trace_top1_id)) for g in gens]
        out = {"model": entry.name, "requests": len(reqs), "max_new_tokens": max_new, "threads": 1,
               "load_avg_start": os.getloadavg()[0], "clock": "process CPU seconds (one thread); *_wall_s: wall",
               "decode_s": {"bf16": ref_s}, "decode_wall_s": {"bf16": ref_w}, "alone_s": {}, "full_s": {},
               "input_positions": sum(len(p) + len(t) - 1 for _, p, t in items),
               "steps": sum(len(t) for _, _, t in items)}
        qs = {}
        for v in VARIANTS:
            qs[v] = q = load_model(entry, v)
            out["decode_s"][v], out["decode_wall_s"][v], _ = _decode_s(q, reqs, max_new)
            out["alone_s"][v], _, _ = _drift_s(ref, {v: q}, items, lengths, "rows")
            out["full_s"][v], _, _ = _drift_s(ref, {v: q}, items, lengths, "rows-full")  # no shared prefix
        clock: dict = {}
        out["drift_s"], out["drift_wall_s"], rows = _drift_s(ref, qs, items, lengths, "rows", clock)
        out["profile_s"] = clock
        out["tf_kl_mean"] = {v: sum(r["tf_kl_mean"] for r in rows[v]) / len(rows[v]) for v in VARIANTS}
        del qs, q
        out["load_avg_end"] = os.getloadavg()[0]
    n, k = len(reqs), len(VARIANTS)
    dec = out["decode_s"]
    # a variant's share of the drift as the merge reads it: its own forwards, and its part of the reference's
    # forwards and of the divergences (computed once for all k variants)
    share = {v: clock[v] + (clock["reference"] + clock["kl"]) / k for v in VARIANTS}
    out["per_variant_s"] = share
    result_rows = []
    for v in VARIANTS:
        d, alone, full = share[v], out["alone_s"][v], out["full_s"][v]
        cells = dec[v] + dec["bf16"]
        ratio = d / cells
        result_rows.append(Row(
            f"tf_drift_{v}_smollm2",
            f"drift {d / n:.3f} CPU s/prompt vs bf16 + {v} decode {cells / n:.3f} CPU s/prompt",
            f"<= {TARGET:g}x the decode of both cells", ratio, f"{ratio:.2f}x", bool(ratio <= TARGET),
            info=[f"tf_drift_{v}: {n} prompts x <= {max_new} tokens ({out['steps']} steps, {out['input_positions']} "
                  f"input positions), one thread, SmolLM2-135M bf16 vs bitsandbytes {v}, read beside "
                  f"{'+'.join(x for x in VARIANTS if x != v)} as the merge reads them: {v}'s forwards "
                  f"{clock[v]:.1f} CPU s + 1/{k} of bf16's {clock['reference']:.1f} s + 1/{k} of the divergences' "
                  f"{clock['kl']:.1f} s = {d:.1f} s; read alone (its own bf16 forward) {alone / n:.3f} s/prompt = "
                  f"{alone / cells:.2f}x; alone without the shared prefix {full / n:.3f} s/prompt = "
                  f"{full / cells:.2f}x; "
                  f"decode bf16 {dec['bf16'] / n:.3f}, {v} {dec[v] / n:.3f} CPU s/prompt (wall "
                  f"{out['decode_wall_s'][v]:.1f} s). Load average {out['load_avg_start']:.1f} -> "
                  f"{out['load_avg_end']:.1f} (shared machine: ratios are side by side in one process)."]))
    both = sum(dec["bf16"] + dec[v] for v in VARIANTS)
    d = out["drift_s"]
    ratio = d / both
    result_rows.append(Row(
        "tf_drift_together_smollm2",
        f"drift of {'+'.join(VARIANTS)} read together {d / n:.3f} CPU s/prompt vs their cells' decode "
        f"{both / n:.3f} CPU s/prompt",
        f"<= {TARGET:g}x the decode of the cells read", ratio, f"{ratio:.2f}x", bool(ratio <= TARGET),
        info=[f"tf_drift_together: {d:.1f} CPU s (wall {out['drift_wall_s']:.1f} s; read alone "
              f"{sum(out['alone_s'].values()):.1f} s): bf16 forwards {clock['reference']:.1f} s, "
              + ", ".join(f"{v} {clock[v]:.1f} s" for v in VARIANTS) + f", divergences {clock['kl']:.1f} s; "
              "the cells read: bf16's decode counted once per variant."]))
    return Outcome(result_rows, {"tf_drift": out})
