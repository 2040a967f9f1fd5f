"""GPU decode benchmark: the harness's batched decoder versus one-at-a-time, on a ~0.5B random-init model.

    python -m benchmarks.gpu_decode                      # needs CUDA; writes benchmarks/gpu_results.json
    python -m benchmarks.gpu_decode --pairs 32 --max-new-tokens 64 --attn sdpa
    python -m benchmarks.gpu_decode --smoke-cpu          # tiny model on CPU: checks the script, measures nothing

Without a CUDA device it prints "no CUDA device" and exits 4 (the project's
"environment cannot do what was asked"); it never reports a figure it did not
measure. It is not part of ``benchmarks.run``.

Model: a Llama-architecture model with Qwen2.5-0.5B's shape (d = 896, 24
layers, 14 heads / 2 KV heads, FFN 4,864, vocabulary 151,936 tied: ~494M
parameters), random-initialised (seeded) in bf16 on ``cuda:0``. Prompts: the
default ladder rendered through tiny-chat's chat template and tokenizer (real
prompt lengths and the real de-duplication structure; the ids are valid for
the larger vocabulary); all identical-rung pairs plus a seeded sample of the
other kept pairs (``--pairs`` in all).

- batched: ``harness.decode.greedy.decode_all`` on the distinct requests of those
  pairs (``decode_requests``: identical-rung second sides are their own
  requests), batch size 16, ``--batching`` (default bucket), with everything
  the harness captures (per-step top-2 logits, hidden states, closed-form
  stability traces over the 151,936-row head);
- one-at-a-time: the same requests, one ``model.generate`` call each with
  batch 1, nothing captured.

Greedy to ``--max-new-tokens`` (default 128; a random model rarely emits the
EOS id, so nearly every request runs to the limit). Reported: generated
tokens per second for both (EOS excluded), the speed-up, whether every
identical-rung pair stayed bit-exact in the batched decode (tokens, logits,
traces), and how many outputs the two routes agree on.

``--engine vllm`` (or ``both``, the default when vLLM is importable) adds the
vLLM engine (``harness.decode.vllm_engine.vllm_decode``) on the same model, saved to
a temporary directory: once with vLLM's batch-invariant kernels
(``VLLM_BATCH_INVARIANT=1``) and once without (``--vllm-batch-invariant``),
each in its own child process (the mode is process-wide once on). For each:
tokens per second (start-up timed apart), whether the identical rung's two
separate requests gave the same tokens, and outputs equal to the HF batched
decode. Results go under ``vllm`` in the same JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/gpu_decode.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO  # noqa: E402

EXIT_NO_DEVICE = 4
SHAPE_0_5B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151_936, max_position_embeddings=4096, tie_word_embeddings=True)
# head_dim 32: vLLM's CPU attention refuses 16.
SHAPE_SMOKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                   intermediate_size=128, vocab_size=1024, max_position_embeddings=1024, tie_word_embeddings=True)


class IdTokenizer:
    """Decodes ids as their numbers: random outputs have no text, and the decoder only needs ``decode``."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(str(int(i)) for i in ids)


def build_model(shape: dict, device: str, attn: str, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         attn_implementation=attn)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    return model


def loaded_for(model, attn: str):
    """A harness LoadedModel around an in-memory model (what decode_all needs)."""
    from harness.models.loading import LoadedModel
    from harness.models.records import ModelInfo
    from harness.models.registry import ModelEntry
    from harness.audit.records import RenderPolicy

    n_params = sum(p.numel() for p in model.parameters())
    entry = ModelEntry(name="random-init", source="./random-init", attn_implementation=attn)
    info = ModelInfo(
        name="random-init", source="(in memory)", variant="bf16", requested_revision=None, resolved_revision=None,
        weights_sha256=None, tokenizer_sha256=None, chat_template_sha256=None, chat_template_policy="model",
        chat_template_kwargs={}, template_date=entry.template_date, dtype="bf16", quantization=None,
        attn_implementation=attn, trust_remote_code=False,
        architecture=type(model).__name__, num_parameters=n_params,
        context_length=model.config.max_position_embeddings, eos_token_ids=(2,), pad_token_id=0,
        pad_token_note="pad id 0", load_seconds=0.0,
    )
    return LoadedModel(entry, IdTokenizer(), model, info, RenderPolicy(True)), n_params


def select_requests(n_pairs: int, max_new_tokens: int, seed: int):
    from harness.audit.tokens import audit_pairs
    from harness.decode.requests import decode_requests
    from harness.ladder.load import load_ladder
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    ladder = load_ladder(str(REPO / "ladders" / "default.yaml"))
    chat = load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"], "bf16", lazy=True)  # tokenizer only
    rows, rendered = audit_pairs("tiny-chat", chat.tokenizer, chat.policy, ladder.pairs, max_new_tokens=max_new_tokens)
    kept_ids = {r.pair_id for r in rows if r.kept}
    kept = [p for p in ladder.pairs if p.pair_id in kept_ids]
    ident = [p for p in kept if p.rung == "identical"]
    others = [p for p in kept if p.rung != "identical"]
    pairs = ident + random.Random(seed).sample(others, max(0, min(len(others), n_pairs - len(ident))))
    reqs, sides = decode_requests(pairs, rows, rendered)
    return pairs, reqs, sides


def one_at_a_time(loaded, reqs, max_new_tokens: int):
    import torch

    model, info = loaded.model, loaded.info
    device = next(model.parameters()).device
    out = {}
    with torch.inference_mode():
        for r in reqs:
            ids = torch.tensor([r.token_ids], dtype=torch.long, device=device)
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=info.pad_token_id,
                                 eos_token_id=list(info.eos_token_ids))
            new = seq[0, ids.shape[1]:].tolist()
            n = next((i for i, x in enumerate(new) if x in info.eos_token_ids), len(new))
            out[(r.prompt_key, r.replicate)] = tuple(new[:n])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=64, help="pairs decoded (all identical-rung pairs + a seeded sample)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batching", default="bucket", choices=("bucket", "padded"))
    ap.add_argument("--attn", default="eager", choices=("eager", "sdpa"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "gpu_results.json"))
    ap.add_argument("--smoke-cpu", action="store_true",
                    help="run the same code on CPU with a tiny model (checks the script; the figures mean nothing)")
    ap.add_argument("--engine", default="both" if _has_vllm() else "hf", choices=("hf", "vllm", "both"))
    ap.add_argument("--vllm-batch-invariant", default="both", choices=("on", "off", "both"))
    ap.add_argument("--vllm-child", default=None, help=argparse.SUPPRESS)  # internal: model dir of a vLLM child run
    args = ap.parse_args(argv)
    if args.vllm_child:
        return _vllm_child(args)

    import torch

    from benchmarks.bench_decode import replicates_identical
    from harness.decode.greedy import decode_all, plan_batches
    from harness.run.manifest import device_info, library_versions

    if args.smoke_cpu:
        device, shape = "cpu", SHAPE_SMOKE
        args.pairs, args.max_new_tokens = min(args.pairs, 20), min(args.max_new_tokens, 16)
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("no CUDA device: benchmarks/gpu_decode.py measures GPU decoding and torch.cuda.is_available() is False "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing was measured. "
              "Run it on a GPU machine (or --smoke-cpu to check the script).", file=sys.stderr)
        return EXIT_NO_DEVICE
    else:
        device, shape = "cuda:0", SHAPE_0_5B

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    vllm_results = _vllm_runs(args, shape) if args.engine in ("vllm", "both") else []
    if args.engine == "vllm":
        return _finish(args, {"smoke_cpu": args.smoke_cpu, "device": device_info(), "libraries": library_versions(),
                              "vllm": vllm_results})
    model = build_model(shape, device, args.attn, args.seed)
    loaded, n_params = loaded_for(model, args.attn)
    pairs, reqs, sides = select_requests(args.pairs, args.max_new_tokens, args.seed)
    print(f"model: random-init Llama, {n_params / 1e6:.0f}M parameters, bf16, {args.attn}, on {device}; "
          f"{len(pairs)} pairs -> {len(reqs)} distinct requests, max_new_tokens={args.max_new_tokens}", flush=True)

    # warm-up (kernels, allocator) on two requests, untimed
    decode_all(loaded, reqs[:2], 4, (4,), args.batch_size, None, args.batching)
    one_at_a_time(loaded, reqs[:1], 4)

    sync()
    t = time.perf_counter()
    gens = decode_all(loaded, reqs, args.max_new_tokens, (args.max_new_tokens,), args.batch_size, None, args.batching)
    sync()
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = one_at_a_time(loaded, reqs, args.max_new_tokens)
    sync()
    t_single = time.perf_counter() - t

    by_key = {(g.prompt_key, g.replicate): g for g in gens}
    tok_batched = sum(len(g.gen_ids) for g in gens)
    tok_single = sum(len(v) for v in single.values())
    ident = [p for p in pairs if p.rung == "identical"]
    exact = sum(replicates_identical(by_key[(sides[p.pair_id][0], 0)], by_key[(sides[p.pair_id][1], 1)]) for p in ident)
    agree = sum(single[k] == tuple(g.gen_ids) for k, g in by_key.items())
    result = {
        "smoke_cpu": args.smoke_cpu,
        "device": device_info(),
        "libraries": library_versions(),
        "model": {"architecture": "LlamaForCausalLM (random init)", "parameters": n_params, **shape,
                  "dtype": "bf16", "attn_implementation": args.attn, "seed": args.seed},
        "pairs": len(pairs), "requests": len(reqs), "batches": len(plan_batches(reqs, args.batch_size, args.batching)),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "batching": args.batching,
        "batched_s": t_batched, "batched_tokens": tok_batched, "batched_tok_s": tok_batched / t_batched,
        "single_s": t_single, "single_tokens": tok_single, "single_tok_s": tok_single / t_single,
        "speedup": t_single / t_batched,
        "identical_pairs": len(ident), "identical_exact": exact, "identical_all_exact": exact == len(ident),
        "outputs_equal_batched_vs_single": agree, "outputs": len(by_key),
        "vllm": [v if "error" in v else
                 {**v, "outputs_equal_vllm_vs_hf_batched": sum(tuple(v["tokens"].get(f"{k[0]}/{k[1]}", ())) ==
                                                                tuple(g.gen_ids) for k, g in by_key.items())}
                 for v in vllm_results],
    }
    print(f"batched      : {tok_batched} tokens in {t_batched:.2f} s = {tok_batched / t_batched:.0f} tok/s "
          f"({result['batches']} batches of <= {args.batch_size}, with traces)")
    print(f"one-at-a-time: {tok_single} tokens in {t_single:.2f} s = {tok_single / t_single:.0f} tok/s")
    print(f"speed-up     : {t_single / t_batched:.1f}x")
    print(f"identical rung exact in the batched decode: {exact}/{len(ident)}; "
          f"outputs equal batched vs one-at-a-time: {agree}/{len(by_key)}")
    return _finish(args, result)


def _finish(args, result: dict) -> int:
    for v in result.get("vllm", []):
        if "error" in v:  # a failed child: its reason, never a figure
            print(f"vllm (batch-invariant {v['batch_invariant']}): no figure: {v['error']}")
            continue
        print(f"vllm (batch-invariant {v['batch_invariant']}): {v['tokens_generated']} tokens in {v['decode_s']:.2f} s = "
              f"{v['tok_s']:.0f} tok/s (start-up {v['load_s']:.1f} s, attention {v['attention_backend']}); identical "
              f"rung exact {v['identical_exact']}/{v['identical_pairs']}")
        v.pop("tokens", None)
    if args.smoke_cpu:
        print("(--smoke-cpu: tiny model on CPU; these figures are not the GPU benchmark and are not written)")
        return 0
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 0


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _vllm_runs(args, shape: dict) -> list[dict]:
    """One child process per batch-invariance setting, on the same saved model."""
    import os
    import shutil
    import subprocess
    import tempfile

    import torch

    settings = ("on", "off") if args.vllm_batch_invariant == "both" else (args.vllm_batch_invariant,)
    out = []
    if "on" in settings and not torch.cuda.is_available():
        # vLLM 0.32's CPU build fails at the first step with VLLM_BATCH_INVARIANT=1 ("'function' object is not subscriptable").
        settings = tuple(s for s in settings if s != "on")
        out.append({"batch_invariant": "on", "error": "not run: vLLM's batch-invariant kernels are CUDA only"})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "random-init"
        shutil.copytree(REPO / "models" / "tiny-chat", model_dir,
                        ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
        build_model(shape, "cpu", args.attn, args.seed).save_pretrained(model_dir)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        for setting in settings:
            res = Path(tmp) / f"vllm-{setting}.json"
            cmd = [sys.executable, "-m", "benchmarks.gpu_decode", "--vllm-child", str(model_dir), "--out", str(res),
                   "--pairs", str(args.pairs), "--max-new-tokens", str(args.max_new_tokens), "--batch-size",
                   str(args.batch_size), "--seed", str(args.seed)] + (["--smoke-cpu"] if args.smoke_cpu else [])
            env = {**os.environ, "VLLM_BATCH_INVARIANT": "1" if setting == "on" else "0"}
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if p.returncode != 0 or not res.is_file():
                out.append({"batch_invariant": setting, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:500]})
                continue
            out.append(json.loads(res.read_text(encoding="utf-8")))
    return out


def _vllm_child(args) -> int:
    from harness.decode.vllm_engine import vllm_decode
    from harness.models.loading import load_model
    from harness.models.registry import ModelEntry

    entry = ModelEntry(name="random-init", source=args.vllm_child)
    info = load_model(entry, "bf16", lazy=True).info
    pairs, reqs, sides = select_requests(args.pairs, args.max_new_tokens, args.seed)
    vllm_decode(entry, info, reqs[:2], 4, args.batch_size)  # warm-up engine, untimed (a fresh one is timed)
    outputs, run = vllm_decode(entry, info, reqs, args.max_new_tokens, args.batch_size)
    tokens = {f"{o.request.prompt_key}/{o.request.replicate}": list(o.gen_ids) for o in outputs}
    ident = [p for p in pairs if p.rung == "identical"]
    exact = sum(tokens[f"{sides[p.pair_id][0]}/0"] == tokens[f"{sides[p.pair_id][1]}/1"] for p in ident)
    n = sum(len(o.gen_ids) for o in outputs)
    Path(args.out).write_text(json.dumps({
        "batch_invariant": run.batch_invariant, "batch_invariant_note": run.batch_invariant_note,
        "version": run.version, "attention_backend": run.attention_backend, "args": run.args, "env": run.env,
        "load_s": run.load_seconds, "decode_s": run.decode_seconds, "tokens_generated": n,
        "tok_s": n / run.decode_seconds, "identical_pairs": len(ident), "identical_exact": exact, "tokens": tokens,
    }, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
