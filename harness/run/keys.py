"""What a cell's memoized work depends on: the material of its decode key and of its results key.

A decode is reused only when everything it depends on is the same (model
revision and weights, tokenizer and template, variant, dtype, quantization,
attention, lengths, decoder version, batching mode, library versions, device,
compute routes); inside the decode entry, one row per (prompt token ids,
replicate). A cell's scored tables are reused only when, on top of that, the
pairs, lengths, scaffold, embedder and scorer are the same. Both keys come
from harness.core.memo.memo_key, the store's one key function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from harness.core.engines import engine_decl, engine_names
from harness.core.memo import memo_key
from harness.schema.cell import CellRecord
from harness.schema.manifest import DeviceRecord
from harness.score.registry import scorer_version  # the registered metrics and their kernel version

GENERATIONS = "generations"
"""Memo namespace of decoded generations (rows keyed by ``cache_ids`` and ``replicate``)."""
RESULTS = "results"
"""Memo namespace of a cell's scored tables."""


class DecodeKeyMaterial(BaseModel):
    """Everything a cached decode depends on; its sha256 is the decode key. Typed fields, no defaults: a
    field left out or misspelt is an error here, never a silently different key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolved_revision: str | None = Field(description="Revision loaded.")
    weights_sha256: str | None = Field(description="sha256 of the weight files.")
    tokenizer_sha256: str | None = Field(description="sha256 of the tokenizer files.")
    chat_template_sha256: str | None = Field(description="sha256 of the chat template.")
    chat_template_policy: str | None = Field(description="Template policy.")
    chat_template_kwargs: dict[str, Any] | None = Field(description="Template keyword arguments.")
    variant: str = Field(description="Variant, spelled with its engine.")
    dtype: str | None = Field(description="Weight dtype.")
    quantization: str | None = Field(description="Quantization.")
    attn_implementation: str | None = Field(description="Attention implementation.")
    lengths: list[int] = Field(description="Scored lengths, sorted.")
    decoder_version: str = Field(description="harness.decode.greedy.DECODER_VERSION.")
    engine: str = Field(description="Which engine chose the tokens (harness.decode.engines).")
    capture: str = Field(description="Where the per-step readings come from.")
    batching: str = Field(description="Batching mode.")
    libraries: dict[str, str | None] = Field(description="Versions of torch, transformers, bitsandbytes and every declared engine's library.")
    device: str = Field(description="GPU name, or cpu.")
    kernels: dict[str, str] | None = Field(
        description="fp32 CPU products (stability traces) differ in the last bits between GEMM routes "
                    "(harness.core.gemm).")


def cell_key(record: CellRecord, lengths: Sequence[int], decoder_version: str, batching: str,
             libraries: dict[str, str | None], device: DeviceRecord) -> str:
    """The decode key of a cell whose model is loaded and whose engine and capture are recorded."""
    if record.engine_name is None or record.capture is None:
        raise ValueError(f"{record.name}--{record.variant}: the decode key needs engine_name and capture recorded")
    material = DecodeKeyMaterial(
        resolved_revision=record.resolved_revision, weights_sha256=record.weights_sha256,
        tokenizer_sha256=record.tokenizer_sha256, chat_template_sha256=record.chat_template_sha256,
        chat_template_policy=record.chat_template_policy, chat_template_kwargs=record.chat_template_kwargs,
        variant=record.variant, dtype=record.dtype, quantization=record.quantization,
        attn_implementation=record.attn_implementation, lengths=sorted(int(L) for L in lengths),
        decoder_version=decoder_version, engine=record.engine_name, capture=record.capture, batching=batching,
        libraries={k: libraries.get(k) for k in keyed_libraries()}, device=device.cuda_device or "cpu",
        kernels=device.kernels)
    return memo_key(GENERATIONS, material.model_dump())


def keyed_libraries() -> tuple[str, ...]:
    """The libraries whose versions are in the decode key: HF's, which every cell reads (tokenizer, probe,
    bitsandbytes weights), and each declared engine's own (harness.core.engines), in declaration order."""
    return ("torch", "transformers", "bitsandbytes", *(engine_decl(name).library for name in engine_names()))


def engine_libraries() -> tuple[str, ...]:
    """The ``libraries`` keys of the declared engines (harness.core.engines), in declaration order."""
    return tuple(engine_decl(name).library for name in engine_names())


def results_key(decode_key: str, pairs: Sequence, lengths: Sequence[int], scaffold: dict | None, name: str,
                embedder_sha: str, store_full_dist: bool = False, twin: bool = False) -> str:
    """Everything a cell's scored tables depend on beyond its decodes (``store_full_dist``: generations.parquet
    holds the full prompt-end rows; ``twin``: pairs.parquet holds the twin divergence, else NaN there)."""
    return memo_key(RESULTS, {
        "decode": decode_key, "scorer": scorer_version(), "embedder": embedder_sha,
        "pairs": [dataclasses.astuple(p) for p in pairs], "lengths": list(lengths),
        "scaffold": scaffold, "name": name, "store_full_dist": store_full_dist,
        **({"twin": True} if twin else {}),  # absent when off: keys of runs without it stay as they were
    })


def ids_key(token_ids: Sequence[int]) -> str:
    """Full token ids as a string: cache hits compare the whole prompt, not a short hash."""
    return ",".join(str(int(i)) for i in token_ids)
