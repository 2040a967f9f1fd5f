"""Worker of bench_engines: HF and vLLM decode side by side in one process (needs vLLM: run in .venv-vllm).

    .venv-vllm/bin/python -m benchmarks.engines_worker --out FILE [--quick]

Two models: the demo model tiny-chat (head_dim 32, vocabulary 512) and a
random-initialised Llama with a real vocabulary (151,936 rows, tied) and
head_dim 64 (hidden 128, 2 heads, 2 layers), saved to a temporary directory
with tiny-chat's tokenizer (prompt ids stay valid; the outputs are never
detokenized). Requests: the default ladder's prompts rendered for tiny-chat:
the identical rung's 16 prompts twice (second sides are their own requests)
plus the first 48 other distinct prompts (16 with ``--quick``), 80 requests
(48) in all, greedy to ``max_new_tokens`` (64; 32 on the real-vocabulary
model with ``--quick``).

Timed, per model: the HF engine (``harness.decode.decode_all``, bucket
batches of 16, with its in-generation capture), the vLLM engine
(``harness.decode.vllm_engine.vllm_decode``: ids only; its start-up is timed apart),
and the teacher-forced probe over vLLM's tokens (what the harness adds to
vLLM for the scorer). Tokens per second count every chosen token, EOS steps
included. Also: outputs where vLLM and HF chose the same tokens, the probe's
agreement with vLLM, and whether vLLM's identical rung (two separate
``generate`` calls) stayed exact.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, single_thread  # noqa: E402

REAL_VOCAB = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=64,
                  intermediate_size=384, vocab_size=151_936, max_position_embeddings=1024, tie_word_embeddings=True)


def _requests(quick: bool):
    from harness.audit.tokens import audit_pairs
    from harness.run.cell import decode_requests
    from harness.ladder.load import load_ladder
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    ladder = load_ladder(str(REPO / "ladders" / "default.yaml"))
    chat = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"], "bf16", lazy=True)
    rows, rendered = audit_pairs("tiny-chat", chat.tokenizer, chat.policy, ladder.pairs, max_new_tokens=64)
    reqs, _ = decode_requests(ladder.pairs, rows, rendered)
    reqs = sorted(reqs, key=lambda r: (r.replicate, r.prompt_key))
    # The identical rung's requests (both replicates) and a fixed share of the rest: the full ladder
    # (351 requests) would keep HF at 64 tokens on the 151,936-row head for about an hour on one thread.
    keep = {r.prompt_key for r in reqs if r.replicate == 1}
    others = [r for r in reqs if r.replicate == 0 and r.prompt_key not in keep]
    return [r for r in reqs if r.replicate == 1 or r.prompt_key in keep] + others[: 16 if quick else 48]


def _random_model_dir(root: Path) -> Path:
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = root / "real-vocab-hd64"
    shutil.copytree(REPO / "models" / "tiny-chat", out, ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
    torch.manual_seed(0)
    cfg = LlamaConfig(**REAL_VOCAB, rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    return out


def measure(entry, reqs, max_new: int) -> dict:
    from harness.decode.greedy import decode_all
    from harness.decode.records import ProbeInput
    from harness.decode.vllm_engine import vllm_decode
    from harness.models.loading import load_model
    from harness.decode.probe import teacher_forced

    loaded = load_model(entry, "bf16", lazy=True)
    t = time.perf_counter()
    outputs, run = vllm_decode(entry, loaded.info, reqs, max_new, 16)
    vllm_total = time.perf_counter() - t
    _ = loaded.model  # HF weights after vLLM is shut down (as in a run)
    decode_all(loaded, reqs[:2], 4, (4,), 16)  # warm-up, untimed
    t = time.perf_counter()
    gens = decode_all(loaded, reqs, max_new, (max_new,), 16)
    hf_s = time.perf_counter() - t
    hf_tokens = sum(len(g.trace_top1_id) for g in gens)
    t = time.perf_counter()
    probes = [teacher_forced(loaded.model, ProbeInput(o.request.token_ids, o.tokens), (max_new,)) for o in outputs]
    probe_s = time.perf_counter() - t
    hf_by = {(g.prompt_key, g.replicate): tuple(int(x) for x in g.trace_top1_id) for g in gens}
    v_by = {(o.request.prompt_key, o.request.replicate): o.tokens for o in outputs}
    reps = [k for k in v_by if k[1] == 1]
    return {
        "model": entry.name, "requests": len(reqs), "max_new_tokens": max_new,
        "hf_s": hf_s, "hf_tokens": hf_tokens, "hf_tok_s": hf_tokens / hf_s,
        "vllm_load_s": run.load_seconds, "vllm_decode_s": run.decode_seconds, "vllm_total_s": vllm_total,
        "vllm_tokens": run.generated_tokens, "vllm_tok_s": run.generated_tokens / run.decode_seconds,
        "probe_s": probe_s, "probe_tok_s": run.generated_tokens / probe_s,
        "outputs_equal_vllm_vs_hf": sum(v_by[k] == hf_by.get(k) for k in v_by), "outputs": len(v_by),
        "probe_steps_agreeing": sum(p.agreement.agreeing for p in probes), "probe_steps": sum(p.agreement.steps for p in probes),
        "vllm_identical_exact": sum(v_by[(k, 1)] == v_by[(k, 0)] for k, _ in reps), "identical_pairs": len(reps),
        "attention_backend": run.attention_backend, "vllm_version": run.version,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    single_thread()
    from harness.models.registry import DEFAULT_REGISTRY, ModelEntry, load_registry

    reqs = _requests(args.quick)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        chat = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
        big = ModelEntry(name="real-vocab-hd64", source=str(_random_model_dir(Path(tmp))))
        for entry, max_new in ((chat, 64), (big, 32 if args.quick else 64)):
            results.append(measure(entry, reqs, max_new))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
