"""Run the speed benchmarks (issues 9 and 19) and print each measured ratio against its target.

    python -m benchmarks.run                 # all of them (make bench)
    python -m benchmarks.run --only decode,fisher
    python -m benchmarks.run --quick         # smaller repetitions and subsets (figures are rougher)

Prints a table ``name | measured | target | ratio | PASS/FAIL`` followed by
notes (method, caveats, where the time goes when a target is missed), writes
``benchmarks/results.json`` (every figure, library versions, CPU) and exits 1
when any target is missed. Every benchmark runs on one torch thread.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, Outcome, Row, single_thread  # noqa: E402

# name -> (module, function); cached_rerun and phase_split share one pair of demo runs
BENCHMARKS = {
    "decode": ("benchmarks.bench_decode", "run"),
    "closed_form": ("benchmarks.bench_closed_form", "run"),
    "fisher": ("benchmarks.bench_fisher", "run"),
    "levenshtein": ("benchmarks.bench_levenshtein", "run"),
    "cached_rerun": ("benchmarks.bench_pipeline", "run_cached_rerun"),
    "phase_split": ("benchmarks.bench_pipeline", "run_phase_split"),
    "validity": ("benchmarks.bench_validity", "run"),  # error rates and coverage by simulation, not speed
    "engines": ("benchmarks.bench_engines", "run"),  # vLLM vs HF tokens/s, run in .venv-vllm (issue 20)
    "real_vocab": ("benchmarks.bench_real_vocab", "run"),  # issue 19: V = 151,936 against plain generate
    "study_rss": ("benchmarks.bench_study_rss", "run"),  # issue 35: peak RSS of stabprobe geometry at V = 151,936
    "llamacpp": ("benchmarks.bench_llamacpp", "run"),  # llama.cpp vs HF tokens/s on SmolLM2 (issue 31)
    "tf_drift": ("benchmarks.bench_tf_drift", "run"),  # issue 30: teacher-forced drift <= half the decode (SmolLM2)
    "workers": ("benchmarks.bench_workers", "run"),  # issue 33: 1 vs 2 decode workers; raw engines at all cores
    "ladder_build": ("benchmarks.bench_ladder", "run"),  # ladder build on 100,000 one-line prompts (issue 34)
}
RESULTS = REPO / "benchmarks" / "results.json"


def cpu_info() -> dict:
    import os

    info = {"machine": platform.machine(), "processor": platform.processor(), "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model_name"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["simd"] = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:
        pass
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def print_table(rows: list[Row]) -> None:
    head = ("name", "measured", "target", "ratio", "result")
    cells = [(r.name, r.measured, r.target, r.ratio_text, "PASS" if r.passed else "FAIL") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    line = lambda c: " | ".join(s.ljust(w) for s, w in zip(c, widths)).rstrip()  # noqa: E731
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(line(c))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and smaller subsets (rougher figures)")
    ap.add_argument("--out", default=str(RESULTS), help="where the JSON results go (default benchmarks/results.json)")
    args = ap.parse_args(argv)
    names = list(BENCHMARKS) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")

    single_thread()
    import os

    # Every other benchmark measures the harness on one core (its targets were set so); bench_workers asks
    # for its worker counts explicitly.
    os.environ.setdefault("STABPROBE_WORKERS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would interleave with the table
    rows: list[Row] = []
    figures: dict = {}
    seconds: dict = {}
    for name in names:
        mod_name, fn_name = BENCHMARKS[name]
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            out: Outcome = getattr(importlib.import_module(mod_name), fn_name)(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - a broken benchmark is a failed row, the others still run
            tb = traceback.format_exc(limit=4)
            out = Outcome([Row(name, f"error: {type(exc).__name__}: {exc}"[:160], "runs", None, "-", False, [tb])],
                          {"error": tb})
        seconds[name] = round(time.perf_counter() - t, 2)
        rows += out.rows
        figures[name] = out.figures

    print()
    print_table(rows)
    notes = [n for r in rows for n in r.info]
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    failed = [r.name for r in rows if not r.passed]
    print()
    print(f"{len(rows) - len(failed)}/{len(rows)} targets met" + (f"; missed: {', '.join(failed)}" if failed else ""))

    from harness.run.manifest import device_info, git_state, library_versions

    record = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "when_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "libraries": library_versions(),
        "device": device_info(),
        "cpu": cpu_info(),
        "torch_threads": 1,
        "rows": [{"name": r.name, "measured": r.measured, "target": r.target, "ratio": r.ratio,
                  "passed": r.passed, "notes": r.info} for r in rows],
        "figures": figures,
        "benchmark_seconds": seconds,
        "all_passed": not failed,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out_path)
    print(f"results: {out_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
