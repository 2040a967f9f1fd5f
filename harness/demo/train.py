"""Seeded, CPU-only training of the embedded demo models.

    python -m harness.demo.train --model all --out models --seed 0

Everything (corpus, tokenizer merges, weight init, batch order) derives from ``--seed``
so a rerun on the same torch build reproduces the committed checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from harness.core.threads import torch_threads
from harness.demo import corpus
from harness.demo.tokenizer import PAD, build_tokenizer

MODEL_NAMES: tuple[str, ...] = ("tiny-chat", "tiny-think", "tiny-base")
IGNORE = -100  # label value the HF causal-LM loss skips
EVAL_SEED_OFFSET = 10_000  # held-out examples come from a disjoint RNG stream
EVAL_MAX_NEW_TOKENS = 48
BASE_PACK_LEN = 128


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float
    batch_size: int
    corpus_size: int
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    think_off_frac: float = 0.25  # tiny-think only: share trained with enable_thinking=False


DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    "tiny-chat": TrainConfig(steps=2000, lr=3e-3, batch_size=32, corpus_size=20_000),
    "tiny-think": TrainConfig(steps=1500, lr=3e-3, batch_size=32, corpus_size=20_000),
    "tiny-base": TrainConfig(steps=1000, lr=3e-3, batch_size=16, corpus_size=20_000),
}


@dataclass(frozen=True)
class TrainSeq:
    ids: tuple[int, ...]
    labels: tuple[int, ...]


# --- data ---------------------------------------------------------------------------------


def _encode(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def _prompt_ids(tok: PreTrainedTokenizerBase, prompt: str, thinking: bool) -> list[int]:
    # Rendering through the tokenizer's own template guarantees training and inference
    # feed byte-identical prompt ids to the model.
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        enable_thinking=thinking,
        tokenize=True,
        return_dict=False,
    )
    return list(ids)


def chat_seq(tok: PreTrainedTokenizerBase, ex: corpus.Example, think: bool, thinking: bool) -> TrainSeq:
    """One chat example; loss only on the assistant reply (including the closing eos)."""
    prompt = _prompt_ids(tok, ex.prompt, thinking)
    reply = f"<think>\n{ex.reasoning}\n</think>\n\n{ex.answer}" if think and thinking else ex.answer
    target = _encode(tok, reply) + [tok.eos_token_id]
    return TrainSeq(tuple(prompt + target), tuple([IGNORE] * len(prompt) + target))


def base_seqs(tok: PreTrainedTokenizerBase, docs: Sequence[str], max_len: int) -> list[TrainSeq]:
    """Greedily pack whole documents (each ending in <|endoftext|>) into sequences, so
    every sequence starts at a document boundary just like an inference prompt does."""
    eos = tok.convert_tokens_to_ids(PAD)
    out: list[TrainSeq] = []
    cur: list[int] = []
    for doc in docs:
        ids = _encode(tok, doc)[: max_len - 1] + [eos]
        if cur and len(cur) + len(ids) > max_len:
            out.append(TrainSeq(tuple(cur), tuple(cur)))
            cur = []
        cur.extend(ids)
    if cur:
        out.append(TrainSeq(tuple(cur), tuple(cur)))
    return out


def build_sequences(name: str, tok: PreTrainedTokenizerBase, seed: int, cfg: TrainConfig) -> list[TrainSeq]:
    if name == "tiny-base":
        return base_seqs(tok, corpus.base_texts(seed, cfg.corpus_size), BASE_PACK_LEN)
    rng = random.Random(seed + 1)
    think = name == "tiny-think"
    seqs = []
    for ex in corpus.examples(seed, cfg.corpus_size):
        thinking = not (think and rng.random() < cfg.think_off_frac)
        seqs.append(chat_seq(tok, ex, think=think, thinking=thinking))
    return seqs


def batches(seqs: Sequence[TrainSeq], batch_size: int, pad_id: int, rng: random.Random) -> Iterator[dict[str, torch.Tensor]]:
    """Endless epochs of shuffled, right-padded batches."""
    order = list(range(len(seqs)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [seqs[i] for i in order[start : start + batch_size]]
            width = max(len(s.ids) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, s in enumerate(chunk):
                n = len(s.ids)
                ids[row, :n] = torch.tensor(s.ids)
                labels[row, :n] = torch.tensor(s.labels)
                mask[row, :n] = 1
            yield {"input_ids": ids, "labels": labels, "attention_mask": mask}


# --- model & optimisation ---------------------------------------------------------------


def make_model(tok: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_frac`` of the peak."""
    warmup = max(1, int(cfg.steps * cfg.warmup_frac))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_loop(model: LlamaForCausalLM, data: Iterator[dict[str, torch.Tensor]], cfg: TrainConfig, log_every: int = 50) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    model.train()
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(**next(data)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{cfg.steps} loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return losses


def save(model: LlamaForCausalLM, tok: PreTrainedTokenizerBase, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Shipped weights are bf16 (the harness loads with dtype=bfloat16); eval runs on a
    # reload of exactly these bytes so reported figures match what users get.
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    # transformers 5 always writes safetensors; the flag documents intent for 4.x readers.
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


# --- evaluation ---------------------------------------------------------------------------


def load(model_dir: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    model.eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@torch.inference_mode()
def generate(model: LlamaForCausalLM, tok: PreTrainedTokenizerBase, prompt: str, chat: bool, thinking: bool = True,
             max_new_tokens: int = EVAL_MAX_NEW_TOKENS) -> str:
    """Greedy, unbatched generation (no padding, so no pad-dependent numerics)."""
    ids = _prompt_ids(tok, prompt, thinking) if chat else _encode(tok, prompt)
    x = torch.tensor([ids])
    y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                       max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    return tok.decode(y[0, len(ids):], skip_special_tokens=True)


def _contains_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text) is not None


def training_prompts(name: str, seed: int, corpus_size: int) -> set[str]:
    if name == "tiny-base":
        marker = " The answer is "
        return {d.split(marker, 1)[0] for d in corpus.base_texts(seed, corpus_size) if marker in d}
    return {ex.prompt for ex in corpus.examples(seed, corpus_size)}


def evaluate(name: str, model_dir: Path, seed: int, n: int, train_prompts: set[str]) -> dict[str, Any]:
    """Greedy held-out eval; answers are compared after stripping surrounding whitespace."""
    model, tok = load(model_dir)
    held_out = corpus.examples(seed + EVAL_SEED_OFFSET, n)
    res: dict[str, Any] = {
        "eval_n": n,
        "eval_seed": seed + EVAL_SEED_OFFSET,
        "max_new_tokens": EVAL_MAX_NEW_TOKENS,
        "dtype": "bfloat16",
        # Task space is finite (150 words x 8 tasks), so many held-out prompts also occur in training.
        "share_prompts_seen_in_training": sum(ex.prompt in train_prompts for ex in held_out) / max(1, n),
    }
    if name == "tiny-base":
        outs = [generate(model, tok, ex.prompt, chat=False) for ex in held_out]
        hits = [_contains_word(o, ex.answer) for o, ex in zip(outs, held_out)]
        res["contains_answer"] = _share(hits)
        res["contains_answer_by_task"] = _by_task(held_out, hits)
        return res
    on = [generate(model, tok, ex.prompt, chat=True, thinking=True) for ex in held_out]
    off = [generate(model, tok, ex.prompt, chat=True, thinking=False) for ex in held_out]
    if name == "tiny-chat":
        hits = [o.strip() == ex.answer for o, ex in zip(on, held_out)]
        res["accuracy"] = _share(hits)
        res["accuracy_by_task"] = _by_task(held_out, hits)
        # Not a training condition for tiny-chat; reported so harness authors know what a
        # blanket enable_thinking=False does to it.
        res["accuracy_enable_thinking_false"] = _share(o.strip() == ex.answer for o, ex in zip(off, held_out))
        return res
    res["thinking_on_opens_with_think"] = _share(o.startswith("<think>") for o in on)
    hits = ["</think>" in o and o.split("</think>", 1)[1].strip() == ex.answer for o, ex in zip(on, held_out)]
    res["thinking_on_accuracy_after_think"] = _share(hits)
    res["thinking_on_accuracy_by_task"] = _by_task(held_out, hits)
    res["thinking_off_no_think"] = _share("<think>" not in o for o in off)
    res["thinking_off_opens_with_think"] = _share(o.startswith("<think>") for o in off)
    res["thinking_off_accuracy"] = _share(o.strip() == ex.answer for o, ex in zip(off, held_out))
    return res


def _by_task(held_out: Sequence[corpus.Example], hits: Sequence[bool]) -> dict[str, float]:
    return {t: _share([h for ex, h in zip(held_out, hits) if ex.task == t]) for t in corpus.TASKS}


def _share(flags: Iterator[bool] | Sequence[bool]) -> float:
    vals = list(flags)
    return round(sum(vals) / max(1, len(vals)), 4)


# --- orchestration ------------------------------------------------------------------------


def train_model(name: str, out_dir: str | Path, steps: int | None = None, seed: int = 0,
                corpus_size: int | None = None, eval_n: int = 100, lr: float | None = None,
                batch_size: int | None = None, threads: int = 1) -> dict[str, Any]:
    """Train ``name`` into ``out_dir/name`` and return (and write) its training.json record."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    cfg = DEFAULT_CONFIGS[name]
    cfg = replace(cfg, steps=steps if steps is not None else cfg.steps,
                  corpus_size=corpus_size if corpus_size is not None else cfg.corpus_size,
                  lr=lr if lr is not None else cfg.lr,
                  batch_size=batch_size if batch_size is not None else cfg.batch_size)
    out = Path(out_dir) / name
    prev_det = torch.are_deterministic_algorithms_enabled()
    # Fixed thread count: CPU kernels may split reductions differently per thread count,
    # which could change low-order bits of the weights. One thread is the default because
    # on a shared 2-core box two OpenMP threads oversubscribe and run ~10x slower (on
    # torch 2.13 CPU, 1 and 2 threads were checked to give bit-identical weights).
    torch.use_deterministic_algorithms(True)
    try:
        with torch_threads(threads):
            # fork_rng keeps the caller's global torch RNG untouched (init draws from it).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                tok = build_tokenizer(seed, "base" if name == "tiny-base" else "chat")
                seqs = build_sequences(name, tok, seed, cfg)
                model = make_model(tok)
                t0 = time.perf_counter()
                losses = train_loop(model, batches(seqs, cfg.batch_size, tok.pad_token_id, random.Random(seed + 2)), cfg)
                train_s = time.perf_counter() - t0
            save(model, tok, out)
            t1 = time.perf_counter()
            metrics = evaluate(name, out, seed, eval_n, training_prompts(name, seed, cfg.corpus_size)) if eval_n > 0 else {}
            eval_s = time.perf_counter() - t1
    finally:
        torch.use_deterministic_algorithms(prev_det)
    record = {
        "model": name,
        "seed": seed,
        "command": f"python -m harness.demo.train --model {name} --out {Path(out_dir)} --seed {seed} --steps {cfg.steps}",
        "config": asdict(cfg),
        "steps": cfg.steps,
        "final_loss": round(losses[-1], 5),
        "final_loss_mean_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 5),
        "loss_curve": [{"step": s, "loss": round(sum(losses[max(0, s - 50):s]) / len(losses[max(0, s - 50):s]), 5)}
                       for s in [1, *range(50, cfg.steps + 1, 50)]],
        "train_wall_time_s": round(train_s, 1),
        "eval_wall_time_s": round(eval_s, 1),
        "threads": threads,
        "corpus_examples": cfg.corpus_size,
        "train_sequences": len(seqs),
        "train_tokens": sum(len(s.ids) for s in seqs),
        "tokenizer_vocab_size": len(tok),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "eval": metrics,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=[*MODEL_NAMES, "all"], required=True)
    p.add_argument("--out", default="models")
    p.add_argument("--steps", type=int, default=None, help="override the per-model default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus-size", type=int, default=None)
    p.add_argument("--eval-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for name in MODEL_NAMES if args.model == "all" else (args.model,):
        print(f"training {name}", flush=True)
        rec = train_model(name, args.out, steps=args.steps, seed=args.seed, corpus_size=args.corpus_size,
                          eval_n=args.eval_n, threads=args.threads)
        print(json.dumps({k: rec[k] for k in ("model", "final_loss", "train_wall_time_s", "eval")}, indent=2), flush=True)


if __name__ == "__main__":
    main()
