"""Worker of bench_workers: vLLM on given requests at all cores (needs vLLM: run in .venv-vllm).

    .venv-vllm/bin/python -m benchmarks.workers_vllm --requests IN.json --out OUT.json

IN.json: {"model": registry name, "max_new_tokens": int, "requests": [[prompt_key, token ids, replicate], ...]}.
OUT.json: vLLM's decode seconds (the generate calls alone), start-up seconds, tokens chosen and version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    spec = json.loads(Path(args.requests).read_text(encoding="utf-8"))
    from harness.decode.records import DecodeRequest
    from harness.decode.vllm_engine import vllm_decode
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()[spec["model"]]
    loaded = load_model(entry, "bf16", lazy=True)
    reqs = [DecodeRequest(k, tuple(ids), int(rep), "") for k, ids, rep in spec["requests"]]
    _, run = vllm_decode(loaded.entry, loaded.info, reqs, int(spec["max_new_tokens"]), 16)
    Path(args.out).write_text(json.dumps({"decode_s": run.decode_seconds, "load_s": run.load_seconds,
                                          "tokens": run.generated_tokens, "version": run.version}), encoding="utf-8")


if __name__ == "__main__":
    main()
