"""Decode workers within a cell (issue 33): one cell at 1 and 2 workers, and raw engines on the same prompts.

Speed rows (left out with ``--quick``), the done-when measure: one model on a whole task ladder, 1 then 2
workers, each run a CLI process of its own (as a user starts it: the pool's start overlaps the run's own
imports), the cell's decode phase with every cost of the split in it, and the four tables compared exactly
(``assert_frame_equal(check_exact=True)``; a difference fails the row): ``workers_demo_tasks`` (tiny-chat,
``ladders/tasks.yaml``, the default lengths 64,512) and ``workers_smollm2_tasks`` (SmolLM2-135M-Instruct,
``ladders/tasks-small.yaml``, 32 new tokens).

Correctness rows ``workers_demo_small`` / ``workers_smollm2_small``: the pairs of the small task ladder's first
12 prompts, 32 new tokens, no cache, ``--workers 1`` then ``--workers 2`` in this process; tables compared exactly;
the speed is shown, not judged (the pool starts cold inside a decode of seconds).

Then, on SmolLM2 and the same 12 prompts' requests (the identical rung's second copies included), at all the
cores this process may use: plain batched ``model.generate`` (left padding, batches of 16, bf16, torch threads
= cores), llama.cpp on the F16 GGUF of the same weights (n_threads = cores) and vLLM (``.venv-vllm``, when
present; its own process, start-up not timed). The last row is the harness at 2 workers (its fastest engine
here, hf; its pool started and bound before the timed run, as the raw engines' start-up is not timed) against
the fastest of those raw engines, in tokens per second of decoding. Quantized GGUFs are left out: a faster
engine on other weights answers another question (bench_llamacpp).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Outcome, Row

LADDER = "ladders/tasks-small.yaml"
MAX_NEW = 32
PROMPTS = 12
"""The pairs of the ladder's first 12 prompts (of 36; 6 with --quick): about 130 decode requests on SmolLM2, which
keeps the benchmark's rows near 3 minutes on an idle 2-core machine (the whole ladder is 400 requests)."""


def _ladder(quick: bool):
    import dataclasses

    from harness.ladder.load import load_ladder

    ladder = load_ladder(REPO / LADDER)
    first = list(dict.fromkeys(p.prompt_id for p in ladder.pairs))[: PROMPTS // 2 if quick else PROMPTS]
    return dataclasses.replace(ladder, pairs=tuple(p for p in ladder.pairs if p.prompt_id in first))


def _cell(model: str, workers: int, out: Path, ladder, lengths: tuple[int, ...] = (MAX_NEW,), warm: bool = False
          ) -> dict:
    """``warm``: the worker pool started and the model bound in it before the run is timed (steady state, as every
    cell after a run's first sees it, and as the raw engines are timed: their start-up is not counted)."""
    from harness.core.threads import torch_threads
    from harness.models.registry import DEFAULT_REGISTRY, load_registry, resolve_models
    from harness.run.parallel import prestart_pool
    from harness.run.pipeline import RunConfig, run

    cfg = RunConfig(models=tuple(resolve_models(model, load_registry(DEFAULT_REGISTRY))),
                    ladder=ladder, out=out, lengths=lengths, progress=False, workers=workers,
                    variants=("bf16",), threads=1)
    if warm and workers > 1:
        with torch_threads(1):  # the run's thread policy: worker 0 then runs on a thread of this process
            prestart_pool(workers, (cfg.models[0], "bf16", cfg.loader), wait=True)  # run() finds it up and bound
    t = time.perf_counter()
    res = run(cfg)
    return _read_cell(res.run_dir, model, workers, time.perf_counter() - t)


def _cli_cell(model: str, workers: int, out: Path, ladder: str, lengths: tuple[int, ...]) -> dict:
    """One single-model run as a user starts it (``python -m harness.cli run``, its own process): the pool's
    start then overlaps the run's own imports, as it does for a user, not a process that imported torch long ago."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "harness.cli", "-q", "run", "--models", model, "--ladder", ladder, "--lengths",
           ",".join(map(str, lengths)), "--variants", "bf16", "--no-cache", "--no-progress", "--workers", str(workers),
           "--out", str(out)]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}")
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    return _read_cell(run_dir, model, workers, wall)


def _read_cell(run_dir: Path, model: str, workers: int, wall: float) -> dict:
    import pandas as pd

    cell = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["models"][0]
    if cell["status"] != "ok":
        raise RuntimeError(f"{model} with {workers} workers: {cell.get('error')}")
    tables = {n: pd.read_parquet(run_dir / n) for n in ("generations.parquet", "pairs.parquet", "drift.parquet",
                                                         "audit.parquet")}
    w = cell.get("workers") or {}
    timings = cell["timings_s"]
    return {"workers": workers, "run_s": round(wall, 2), "decode_phase_s": timings["decode"],
            "to_decoded_s": round(sum(timings.get(k, 0.0) for k in ("load", "audit", "decode")), 3),
            "engine_decode_s": cell["engine"]["decode_seconds"], "tokens": cell["generated_tokens"],
            "pool_start_s": w.get("startup_seconds", 0.0), "bind_s": w.get("bind_seconds", 0.0),
            "rss_mib": w.get("rss_mib"), "cpu_s": w.get("cpu_seconds"), "tables": tables}


def _equal(a: dict, b: dict) -> str | None:
    import pandas as pd

    for name, fa in a["tables"].items():
        try:
            pd.testing.assert_frame_equal(fa, b["tables"][name], check_exact=True)
        except AssertionError as exc:
            return f"{name}: {str(exc).splitlines()[0]}"
    return None


def _requests(model: str, ladder):
    from harness.audit.tokens import audit_pairs
    from harness.decode.requests import decode_requests
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()[model]
    loaded = load_model(entry, "bf16")
    rows, rendered = audit_pairs(loaded.info.name, loaded.tokenizer, loaded.policy, ladder.pairs,
                                 context_len=loaded.info.context_length, max_new_tokens=MAX_NEW)
    reqs, _ = decode_requests(ladder.pairs, rows, rendered)
    return entry, loaded, reqs


def _hf_generate(loaded, reqs, threads: int) -> dict:
    import torch

    from harness.core.threads import torch_threads

    model, pad = loaded.model, loaded.info.pad_token_id
    eos = list(loaded.info.eos_token_ids)
    order = sorted(reqs, key=lambda r: len(r.token_ids))
    tokens = 0
    with torch_threads(threads), torch.inference_mode():
        t = time.perf_counter()
        for i in range(0, len(order), 16):
            batch = [list(r.token_ids) for r in order[i : i + 16]]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                 pad_token_id=pad, eos_token_id=eos)
            for row in out[:, width:].tolist():
                n = next((j + 1 for j, x in enumerate(row) if x in eos), len(row))
                tokens += n
        secs = time.perf_counter() - t
    return {"decode_s": secs, "tokens": tokens, "tok_s": tokens / secs, "threads": threads}


def _llamacpp(entry, reqs, threads: int) -> dict:
    from harness.core.threads import torch_threads
    from harness.decode.engine_llamacpp import LlamacppEngine, gguf_for
    from harness.models.loading import load_model

    loaded = load_model(entry, "f16@llamacpp", lazy=True)
    gguf_for(loaded, threads)  # made (once) outside the timing
    eng = LlamacppEngine("llamacpp")
    with torch_threads(threads):  # the engine runs with the thread count in force
        try:
            _, erun = eng.decode_ids(loaded, reqs, MAX_NEW)
        finally:
            eng.shutdown()
    return {"decode_s": erun.decode_seconds, "tokens": erun.generated_tokens,
            "tok_s": erun.generated_tokens / erun.decode_seconds, "threads": threads, "version": erun.version}


def _vllm(model: str, reqs, threads: int) -> dict:
    from benchmarks.bench_engines import vllm_python

    py = vllm_python()
    if py is None:
        return {"error": "no vLLM environment (make install-vllm, or set STABPROBE_VLLM_PYTHON)"}
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"model": model, "max_new_tokens": MAX_NEW,
                                    "requests": [[r.prompt_key, list(r.token_ids), r.replicate] for r in reqs]}))
        p = subprocess.run([py, "-m", "benchmarks.workers_vllm", "--requests", str(spec), "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=900,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if p.returncode != 0 or not out.is_file():
            return {"error": (p.stderr.strip().splitlines() or ["(no output)"])[-1][:300]}
        r = json.loads(out.read_text())
    return {**r, "tok_s": r["tokens"] / r["decode_s"], "threads": threads}


DEMO_LADDER = "ladders/tasks.yaml"
DEMO_LENGTHS = (64, 512)
"""The demo model's cell at the cell level (issue 33): the whole task ladder (242 prompts, 4,081 decode requests)
at the run's default lengths; about 26 s of decode on one worker (17,689 tokens: most outputs stop early, a few
run to 512), 30-70 s per run on a 2-core machine (the row's cost: about 2 minutes)."""


def _cli_row(figures: dict, short: str, model: str, ladder_path: str, lengths: tuple[int, ...]) -> Row:
    """One model on a whole task ladder, 1 then 2 workers, each a CLI run of its own (as a user starts it): the
    decode phase with everything the split costs (the done-when measure of issue 33)."""
    from harness.ladder.load import load_ladder

    ladder = load_ladder(REPO / ladder_path)  # for its pair count
    with tempfile.TemporaryDirectory() as tmp:
        one = _cli_cell(model, 1, Path(tmp) / "one", ladder_path, lengths)
        two = _cli_cell(model, 2, Path(tmp) / "two", ladder_path, lengths)
    diff = _equal(one, two)
    ratio = one["decode_phase_s"] / two["decode_phase_s"]
    upto = one["to_decoded_s"] / two["to_decoded_s"]
    figures[short] = {k: {x: v for x, v in c.items() if x != "tables"} for k, c in (("w1", one), ("w2", two))}
    figures[short].update(tables_equal=diff is None, load_after=os.getloadavg())
    return Row(
        f"workers_{short}",
        f"decode phase {one['decode_phase_s']:.1f} s (1 worker) vs {two['decode_phase_s']:.1f} s (2); tables "
        + ("equal" if diff is None else "DIFFER"),
        ">= 1.7x faster, tables equal", ratio, f"{ratio:.2f}x", bool(ratio >= 1.7 and diff is None),
        info=[f"workers_{short}: {model}, {ladder_path} (all {len(ladder.pairs)} pairs), L = "
              f"{','.join(map(str, lengths))}, --no-cache, {one['tokens']} tokens decoded. The decode phase "
              f"(cell.json timings_s.decode) holds what the split costs in it: the time it decoded short of the "
              f"spawned worker still starting and binding ({two['pool_start_s']:.1f} s; worker 0 decodes meanwhile), "
              f"waits for binding ({two['bind_s']:.1f} s), dealing, the traces filled in the workers. Each run is a "
              f"CLI process of its own; the pool starts with it and binds the model while it loads and audits, so "
              f"part of its cost lands there: load + audit + decode {one['to_decoded_s']:.1f}"
              f" s vs {two['to_decoded_s']:.1f} s ({upto:.2f}x); the whole run {one['run_s']:.1f} s vs "
              f"{two['run_s']:.1f} s. Engine decode {one['engine_decode_s']:.1f} s vs {two['engine_decode_s']:.1f} s; "
              f"worker CPU seconds {two['cpu_s']}; load average before {figures['load_before'][0]:.1f}, after "
              f"{figures[short]['load_after'][0]:.1f}"
              + ("" if diff is None else f"; DIFFERENCE: {diff}")])


SMOL_LADDER = "ladders/tasks-small.yaml"
SMOL_LENGTHS = (MAX_NEW,)


def run(quick: bool = False) -> Outcome:
    from harness.core.threads import available_cpus

    cores = available_cpus()
    ladder = _ladder(quick)
    rows, figures = [], {"cores": cores, "load_before": os.getloadavg()}
    cells = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, short in (("tiny-chat", "demo"), ("smollm2-135m-instruct", "smollm2")):
            one = _cell(model, 1, Path(tmp) / f"{short}1", ladder)
            two = _cell(model, 2, Path(tmp) / f"{short}2", ladder)
            diff = _equal(one, two)
            cells[short] = two
            ratio = one["engine_decode_s"] / two["engine_decode_s"]
            phase = one["decode_phase_s"] / two["decode_phase_s"]
            figures[f"{short}_small"] = {k: {x: v for x, v in c.items() if x != "tables"}
                                         for k, c in (("w1", one), ("w2", two))}
            figures[f"{short}_small"]["tables_equal"] = diff is None
            # A cell this small (seconds of decode) cannot pay for a worker's start (~4 s, none of it overlapped
            # in a process that imported torch long ago): a correctness row; the speed rows are the whole ladders.
            rows.append(Row(
                f"workers_{short}_small",
                f"2 workers {two['tokens'] / two['engine_decode_s']:.0f} vs 1 worker "
                f"{one['tokens'] / one['engine_decode_s']:.0f} tok/s, pool cold; tables "
                + ("equal" if diff is None else "DIFFER"),
                "tables equal", ratio, f"{ratio:.2f}x", diff is None,
                info=[f"workers_{short}_small: {model}, {LADDER} (first {len(set(p.prompt_id for p in ladder.pairs))} "
                      f"prompts' pairs), {MAX_NEW} tokens, {one['tokens']} tokens decoded; decode "
                      f"{one['engine_decode_s']:.1f} s (1 worker) vs {two['engine_decode_s']:.1f} s (2); the whole decode "
                      f"phase {one['decode_phase_s']:.1f} s vs {two['decode_phase_s']:.1f} s ({phase:.2f}x), of which "
                      f"pool start {two['pool_start_s']:.1f} s and weights per worker {two['bind_s']:.1f} s; worker "
                      f"peak RSS {two['rss_mib']} MiB; worker CPU seconds {two['cpu_s']} (sum / max "
                      f"{sum(two['cpu_s']) / max(two['cpu_s']):.2f}: the speed-up the split allows on idle cores)"
                      + ("" if diff is None else f"; DIFFERENCE: {diff}")]))
    if not quick:
        rows.append(_cli_row(figures, "demo_tasks", "tiny-chat", DEMO_LADDER, DEMO_LENGTHS))
        rows.append(_cli_row(figures, "smollm2_tasks", "smollm2-135m-instruct", SMOL_LADDER, SMOL_LENGTHS))
    with tempfile.TemporaryDirectory() as tmp:
        # The harness in steady state (its pool up and bound), timed as the raw engines are: start-up not counted.
        cells["smollm2"] = _cell("smollm2-135m-instruct", 2, Path(tmp) / "warm", ladder, warm=True)
    entry, loaded, reqs = _requests("smollm2-135m-instruct", ladder)
    raw = {"hf_generate": _hf_generate(loaded, reqs, cores), "llamacpp_f16": _llamacpp(entry, reqs, cores),
           "vllm": _vllm("smollm2-135m-instruct", reqs, cores)}
    figures["raw_smollm2"] = raw
    ok = {k: v for k, v in raw.items() if "tok_s" in v}
    smol = cells["smollm2"]
    harness_tok_s = smol["tokens"] / smol["engine_decode_s"]
    best = max(ok, key=lambda k: ok[k]["tok_s"]) if ok else None
    ratio = harness_tok_s / ok[best]["tok_s"] if best else None
    figures["harness_vs_fastest"] = {"harness_tok_s": harness_tok_s, "fastest": best, "ratio": ratio}
    raw_text = "; ".join(f"{k} {v['tok_s']:.0f} tok/s" if "tok_s" in v else f"{k}: {v['error']}" for k, v in raw.items())
    rows.append(Row(
        "harness_vs_fastest_raw_smollm2",
        f"harness (hf, 2 workers) {harness_tok_s:.0f} tok/s vs {best} {ok[best]['tok_s']:.0f} tok/s" if best
        else "no raw engine ran", ">= 0.8x", ratio, f"{ratio:.2f}x" if ratio else "-", bool(ratio and ratio >= 0.8),
        info=[f"harness_vs_fastest_raw_smollm2: {len(reqs)} requests x <= {MAX_NEW} tokens, {cores} cores each: "
              f"{raw_text}. The harness figure is its decode (the engine's seconds with 2 one-thread workers, the pool "
              f"started and the model bound before the run, as every cell after a run's first finds it; the raw "
              f"engines' start-up is not timed either), with its per-step readings; the raw engines choose tokens "
              f"only. Load average before: "
              f"{figures['load_before'][0]:.1f}."]))
    return Outcome(rows, {"workers": figures})
