"""Tests for the embedded demo models: the training library and the committed checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.demo import corpus
from harness.demo.chat_template import THINK_OFF_SUFFIX
from harness.demo.tokenizer import build_tokenizer
from harness.demo.train import generate, load, train_model

MODELS = Path(__file__).resolve().parents[2] / "models"




def _require(model_dir: Path) -> Path:
    if not (model_dir / "model.safetensors").is_file():
        pytest.fail(f"committed demo model missing: {model_dir} (run python -m harness.demo.train --model all --out models)")
    return model_dir


def test_short_training_writes_reloadable_model(tmp_path: Path) -> None:
    rec = train_model("tiny-chat", tmp_path, steps=5, seed=123, corpus_size=200, eval_n=2)
    out = tmp_path / "tiny-chat"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "training.json"):
        assert (out / name).is_file(), name
    assert math.isfinite(rec["final_loss"])
    assert json.loads((out / "training.json").read_text())["steps"] == 5
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is False

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert (out / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    text = generate(model, tok, "Reverse the word apple.", chat=True, max_new_tokens=4)
    assert isinstance(text, str)


def test_same_seed_same_corpus_and_vocab() -> None:
    assert corpus.examples(7, 300) == corpus.examples(7, 300)
    assert corpus.examples(7, 300) != corpus.examples(8, 300)
    assert corpus.base_texts(7, 100) == corpus.base_texts(7, 100)
    a = build_tokenizer(7, "chat", corpus_n=1500)
    b = build_tokenizer(7, "chat", corpus_n=1500)
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_committed_chat_template_preserves_whitespace() -> None:
    tok = AutoTokenizer.from_pretrained(_require(MODELS / "tiny-chat"))
    msgs = [{"role": "user", "content": " hi\n"}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\n hi\n<|im_end|>\n<|im_start|>assistant\n"
    off = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith(THINK_OFF_SUFFIX)
    trailing = tok.apply_chat_template([{"role": "user", "content": "hi "}], add_generation_prompt=True, tokenize=False)
    assert "hi <|im_end|>" in trailing
    # Whitespace must also survive tokenisation, not just rendering.
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids != tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False)


def test_committed_think_model_toggles_think_block(one_thread: None) -> None:
    model, tok = load(_require(MODELS / "tiny-think"))
    # <think> is an added but non-special token, so it survives skip_special_tokens=True.
    think_id = tok.convert_tokens_to_ids("<think>")
    assert tok.decode([think_id], skip_special_tokens=True) == "<think>"
    for _, prompt in corpus.in_domain_prompts()[:2]:
        on = generate(model, tok, prompt, chat=True, thinking=True)
        off = generate(model, tok, prompt, chat=True, thinking=False)
        assert on.startswith("<think>"), on
        assert "<think>" not in off, off
