"""Byte-level BPE tokenizer (vocab 512) trained on the demo corpus.

All three demo models share one vocabulary so their token ids are comparable; they differ
only in eos token and chat template. Byte-level BPE means any perturbed prompt (odd
whitespace, unicode, typos) still encodes losslessly.
"""

from __future__ import annotations

from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness.demo import corpus
from harness.demo.chat_template import CHAT_TEMPLATE

VOCAB_SIZE = 512
PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END)
THINK_TOKENS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE)

Flavor = Literal["chat", "base"]


def training_texts(seed: int, n: int = 6000) -> list[str]:
    """Text the BPE merges are learned from: prompts, answers, reasoning, role names and
    base-model prose. Markup tokens are excluded because they are atomic added tokens."""
    texts: list[str] = []
    for ex in corpus.examples(seed, n):
        texts.append(f"user\n{ex.prompt}\nassistant\n{ex.reasoning}\n\n{ex.answer}\n")
    texts.extend(corpus.base_texts(seed + 1, n // 2))
    return texts


def train_bpe(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a leading space in a prompt must stay a visible, distinct token.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # Reserving the markup strings here pins them to ids 0..4 regardless of the corpus.
        special_tokens=[*SPECIAL_TOKENS, *THINK_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # As in Qwen3, think markers are atomic but NOT special, so
    # decode(skip_special_tokens=True) keeps them in the text.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def wrap(tok: Tokenizer, flavor: Flavor) -> PreTrainedTokenizerFast:
    """Wrap a trained backend as a transformers tokenizer for a chat or a base model."""
    chat = flavor == "chat"
    eos = IM_END if chat else PAD
    hf = PreTrainedTokenizerFast(
        # A copy, so wrapping the same backend twice never shares mutable state.
        tokenizer_object=Tokenizer.from_str(tok.to_str()),
        eos_token=eos,
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (eos, PAD)],
        # Whitespace perturbations must round-trip through decode unchanged.
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    if chat:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tokenizer(seed: int, flavor: Flavor, corpus_n: int = 6000) -> PreTrainedTokenizerFast:
    return wrap(train_bpe(training_texts(seed, corpus_n)), flavor)
