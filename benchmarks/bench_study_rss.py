"""Peak memory of `stabprobe geometry` at a real vocabulary (issue 35).

Model: random-init ``Qwen3ForCausalLM`` with the Qwen3 tokenizer and its full
embedding size V = 151,936 (harness.demo.random_init, hidden 64, 2 layers),
built in a temporary directory. A separate process runs the geometry study
(``run_geometry``, fp32, the defaults of the command: three ε, k = 64, 7
eigenvectors, 12 structured, 8 random / tangent / negative directions, the
Jacobian check on 5 positions) on the first base prompts of
``ladders/default.yaml`` with all their pairs, and reports its own peak
resident set, ``VmHWM`` (not ru_maxrss: Linux carries that across fork +
exec). Target: <= 4 GB.

Before issue 35 the study's Jacobian check alone needed a V×V fp64
intermediate: 185 GB at this vocabulary (SmolLM2, V = 49,152, was killed at
23.8 GB on a 24 GB machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Outcome, Row, fmt_s, timed

RSS_TARGET_MB = 4096
PROMPTS, QUICK_PROMPTS = 4, 2
MAX_NEW_TOKENS = 8
MAX_POSITIONS, QUICK_POSITIONS = 32, 8
TOKENIZER = REPO / "tests" / "fixtures" / "tokenizers" / "qwen3"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(model_dir: str, out: str, n_prompts: int, max_positions: int) -> None:
    """Runs the study in this process and prints one JSON line: its peak RSS and what the study measured."""
    import dataclasses

    import torch

    from harness.geometry.study import GeometryConfig, run_geometry
    from harness.ladder.load import load_ladder
    from harness.models.registry import entry_for_local_dir

    torch.set_num_threads(1)
    ladder = load_ladder(REPO / "ladders" / "default.yaml")
    keep = {p.id for p in ladder.prompts[:n_prompts]}
    ladder = dataclasses.replace(ladder, pairs=tuple(p for p in ladder.pairs if p.prompt_id in keep))
    res = run_geometry(GeometryConfig(models=(entry_for_local_dir(Path(model_dir)),), ladder=ladder, out=Path(out),
                                      max_new_tokens=MAX_NEW_TOKENS, max_positions=max_positions, threads=1))
    m = next(iter(res.summary["models"].values()))
    if m.get("status") != "ok":
        raise SystemExit(f"geometry failed: {m.get('error')}")
    print(json.dumps({"max_rss_mb": _peak_rss_mb(), "exit_code": res.exit_code, "vocab_size": m["head"]["vocab_size"],
                      "n_prompts": m["n_prompts"], "n_positions": m["n_positions"], "n_swept": m["n_swept_positions"],
                      "jacobian_check": m["jacobian_check"], "timings_s": m["timings_s"]}))


def run(quick: bool = False) -> Outcome:
    from harness.demo.random_init import make_random_qwen3

    n_prompts, max_pos = (QUICK_PROMPTS, QUICK_POSITIONS) if quick else (PROMPTS, MAX_POSITIONS)
    with tempfile.TemporaryDirectory(prefix="stabprobe-study-rss-") as d:
        tmp = Path(d)
        model = make_random_qwen3(TOKENIZER, tmp / "qwen3-h64")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t, proc = timed(lambda: subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_study_rss", "--child", str(model), str(tmp / "runs"),
             str(n_prompts), str(max_pos)], cwd=REPO, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise RuntimeError(f"geometry child failed: {proc.stderr[-800:]}")
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = fig["max_rss_mb"]
    jc = fig["jacobian_check"]
    row = Row("study_rss/geometry", f"{mb:.0f} MB peak RSS, stabprobe geometry at V={fig['vocab_size']:,}: "
              f"{fig['n_prompts']} prompts, {fig['n_positions']} positions, {fig['n_swept']} swept ({fmt_s(t)})",
              f"<= {RSS_TARGET_MB} MB", mb, f"{mb:.0f} MB", mb <= RSS_TARGET_MB and fig["vocab_size"] == 151_936)
    row.info.append(f"study_rss: Jacobian check at V={fig['vocab_size']:,} on {jc.get('n')} positions, max rel. error "
                    f"‖J‖_F fp64 {jc.get('max_rel_err_fp64', float('nan')):.1e}, JVP {jc.get('jvp_max_rel_err', float('nan')):.1e}, "
                    f"VJP rows {jc.get('vjp_max_rel_err', float('nan')):.1e}; phases {fig['timings_s']}")
    return Outcome([row], fig)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        print(__doc__)
