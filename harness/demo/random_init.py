"""A random-initialised model of a real architecture wearing a published tokenizer.

It is the degenerate model the seed study warns about: it answers nothing,
and often the same thing whatever the prompt. The harness must call it
``unresponsive`` rather than "stable" (harness.summary.traps). Built in seconds, no hub:

    python -m harness.demo.random_init --tokenizer ../shared/fixtures/tokenizers/qwen3 --out /tmp/qwen3-random
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path


def make_random_qwen3(tokenizer_dir: Path, out: Path, hidden: int = 64, layers: int = 2, head_dim: int = 32,
                      vocab_size: int | None = None, seed: int = 0) -> Path:
    """Save a bf16 random-init Qwen3ForCausalLM with the tokenizer of ``tokenizer_dir`` into ``out``.

    ``vocab_size`` None: the published embedding size (151,936 for Qwen3).
    """
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    packed = tokenizer_dir / "tokenizer.json.gz"
    if packed.is_file():
        # The published fixtures ship tokenizer.json gzipped next to tokenizer_config.json.
        shutil.copy2(tokenizer_dir / "tokenizer_config.json", out / "tokenizer_config.json")
        with gzip.open(packed, "rb") as src, open(out / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
        tokenizer_dir = out
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab_size or 151_936, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // head_dim), num_key_value_heads=max(1, hidden // head_dim), head_dim=head_dim,
        max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=eos, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
    )
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="folder with tokenizer.json(.gz) and tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(make_random_qwen3(Path(a.tokenizer), Path(a.out), hidden=a.hidden, layers=a.layers, seed=a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
