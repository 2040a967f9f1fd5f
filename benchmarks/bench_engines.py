"""Decode engines side by side: tokens/s of vLLM and HF on tiny-chat and on a real-vocabulary model (head_dim 64).

vLLM needs transformers <5.20, so it lives in ``.venv-vllm`` (``make
install-vllm``); this module runs ``benchmarks.engines_worker`` there
(``$STABPROBE_VLLM_PYTHON``, else ``.venv-vllm/bin/python``, else this
interpreter when it has vLLM) and reports its figures. Both engines run in
that one process, one after the other, on one torch thread; see the worker's
docstring for what is timed. There is no target: the rows are a side-by-side
record (PASS means "measured"); a missing vLLM environment is a FAIL with the
reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Outcome, Row


def vllm_python() -> str | None:
    env = os.environ.get("STABPROBE_VLLM_PYTHON")
    if env:
        return env
    venv = REPO / ".venv-vllm" / "bin" / "python"
    if venv.is_file():
        return str(venv)
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def run(quick: bool = False) -> Outcome:
    py = vllm_python()
    if py is None:
        reason = "no vLLM environment (make install-vllm, or set STABPROBE_VLLM_PYTHON)"
        return Outcome([Row("engines", reason, "side by side", None, "-", False)], {"error": reason})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engines.json"
        cmd = [py, "-m", "benchmarks.engines_worker", "--out", str(out)] + (["--quick"] if quick else [])
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode != 0 or not out.is_file():
            last = (p.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            return Outcome([Row("engines", f"worker failed: {last}", "side by side", None, "-", False)],
                           {"error": p.stderr[-4000:]})
        results = json.loads(out.read_text(encoding="utf-8"))
    rows = []
    for r in results:
        ratio = r["vllm_tok_s"] / r["hf_tok_s"]
        rows.append(Row(
            f"engines_{r['model']}",
            f"vllm {r['vllm_tok_s']:.0f} tok/s vs hf {r['hf_tok_s']:.0f} tok/s; probe {r['probe_tok_s']:.0f} tok/s",
            "side by side (no target)", ratio, f"{ratio:.2f}x", True,
            info=[f"{r['model']}: {r['requests']} requests x <= {r['max_new_tokens']} tokens; vLLM start "
                  f"{r['vllm_load_s']:.1f} s ({r['vllm_version']}, attention {r['attention_backend']}); "
                  f"outputs equal vLLM vs HF {r['outputs_equal_vllm_vs_hf']}/{r['outputs']}; probe reproduced "
                  f"{r['probe_steps_agreeing']}/{r['probe_steps']} vLLM steps; vLLM identical rung exact "
                  f"{r['vllm_identical_exact']}/{r['identical_pairs']}. Shared machine: figures as measured under load."],
        ))
    return Outcome(rows, {"engines": results})
