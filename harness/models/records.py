"""Frozen records of the models stage: what a variant name means and what was actually loaded.

LoadedModel (harness.models.loading) is not one of them: it holds the live tokenizer and torch modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict


@dataclass(frozen=True)
class VariantSpec:
    """A parsed variant name (harness.models.variants.parse_variant)."""

    name: str
    """The variant as written (``bf16``, ``int4-nothink``, ``bf16@vllm``)."""
    weights: str
    """The weights part: bf16, fp16, fp32, int8 or int4 (WEIGHTS)."""
    template_overrides: dict[str, Any] = field(default_factory=dict)
    """Chat-template keywords the variant adds (``-nothink``: enable_thinking=False); empty: none."""
    engine: str | None = None
    """The engine the name carries (``bf16@vllm``: one declared in harness.core.engines); None: the run's engine."""


@dataclass(frozen=True)
class ModelInfo:
    """What was actually loaded; goes verbatim into the manifest."""

    name: str
    """Registry name of the model."""
    source: str
    """Hub id or local directory the model was loaded from."""
    variant: str
    """The variant loaded (harness.models.variants)."""
    requested_revision: str | None
    """The revision the registry entry asks for (a hub revision, or the ``sha256:<hex>`` pin of a local directory); None: not pinned."""
    resolved_revision: str | None
    """The revision actually loaded (hub commit hash, or the local directory's content revision); None when unknown."""
    weights_sha256: str | None
    """``sha256:<hex>`` of the weight files; None when the snapshot is not on disk."""
    tokenizer_sha256: str | None
    """``sha256:<hex>`` of the tokenizer files; None as weights_sha256."""
    chat_template_sha256: str | None
    """Hex sha256 of the template rendered; None for raw prompts."""
    chat_template_policy: str
    """The registry's ``chat_template``: model, none, or a .jinja path."""
    chat_template_kwargs: dict[str, Any]
    """Keywords passed to the template: the registry's plus the variant's overrides."""
    template_date: str
    """What the template's strftime_now answers (YYYY-MM-DD or 'today'); see harness.audit.template_clock."""
    dtype: str
    """Weight dtype name: bf16, fp16 or fp32 (the registry's dtype for quantized variants)."""
    quantization: str | None
    """The bitsandbytes scheme in words for int8/int4; None when not quantized."""
    attn_implementation: str
    """Attention kernel asked for (and checked to be the one transformers used)."""
    trust_remote_code: bool
    """Whether the model's own code was allowed to run."""
    architecture: str
    """First of config.architectures (else the config class name)."""
    num_parameters: int
    """Parameter count from the safetensors headers; -1 when not safetensors or not on disk."""
    context_length: int | None
    """Maximum positions from the config; None when it names none."""
    eos_token_ids: tuple[int, ...]
    """Every EOS id of the tokenizer and generation config, sorted; empty when none."""
    pad_token_id: int
    """Id used for (masked) left padding."""
    pad_token_note: str
    """Where pad_token_id came from (the tokenizer's pad token, the first EOS id, or 0)."""
    load_seconds: float
    """Seconds to describe the model: config, tokenizer and hashes, the weights not included (LoadedModel.weights_seconds)."""
    chat_template_source: str | None = None
    """'tokenizer', the registry entry's .jinja file, or None (raw prompts)."""
    conversion: dict[str, Any] | None = None
    """For a GGUF source (harness.models.gguf): the pinned GGUF's sha256 and origin, the conversion's libraries,
    dtype, converted directory revision and seconds, and whether this load converted; None for other sources."""


class TraceHeadCheck(TypedDict):
    """The closed-form head checked against the logits greedy (or the probe) took its argmax over, once per cell
    (harness.decode.greedy.check_trace_head). A dict, not a frozen record: the cell writes it into the manifest as is."""

    max_rel_dev: float
    """max over rows of max|g(W h + b) - logits| / max|logits| (nan: no finite row to compare)."""
    tolerance: float
    """The relative tolerance it was held to (harness.decode.greedy.trace_tolerance)."""
    rows: int
    """Rows (first-step logits of one batch) compared."""
    ok: bool
    """max_rel_dev <= tolerance; False leaves every trace of the cell nan."""


@dataclass(frozen=True)
class LinearInvariance:
    """What the probe found for one model's linear layers on this machine (harness.decode.invariant)."""

    invariant: bool
    """True when every distinct linear shape gave every row the same bits at every probed batch size."""
    shapes_probed: int
    """Distinct (in_features, out_features, dtype) linear shapes probed."""
    variant_shapes: tuple[str, ...]
    """The shapes that were not invariant, as 'KxN dtype' (empty when invariant)."""
    chunk_rows: int | None
    """Rows per linear call while decoding (harness.decode.invariant.CHUNK_ROWS) when not invariant; None when calls run unchunked."""
    variant_layers: tuple[str, ...] = ()
    """Shapes of quantized or other non-plain linear layers (bitsandbytes, quanto: 'Linear8bitLt 576x576') that were
    not invariant: chunking covers plain ``nn.Linear`` only, so these stay batch-dependent."""
    not_probed: tuple[str, ...] = ()
    """Layer types that compute in the model but could not be probed, with the reason: nothing is claimed for them."""

    @property
    def covered(self) -> bool:
        """Every computing layer was probed and is invariant, or made so by chunking (plain linear layers only)."""
        return not self.variant_layers and not self.not_probed

    def note(self) -> str:
        if self.invariant:
            note = f"linear layers batch-invariant on this machine ({self.shapes_probed} shapes probed)"
        elif self.variant_shapes:
            note = (f"linear layers not batch-invariant on this machine ({', '.join(self.variant_shapes)}): run in fixed "
                    f"chunks of {self.chunk_rows} rows (harness.decode.invariant)")
        else:
            note = f"plain linear layers batch-invariant ({self.shapes_probed} shapes probed)"
        if self.variant_layers:
            note += f"; NOT batch-invariant and not chunked: {', '.join(self.variant_layers)}"
        if self.not_probed:
            note += f"; not probed: {', '.join(self.not_probed)}"
        return note
