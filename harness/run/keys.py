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

from harness.core.memo import memo_key
from harness.score.registry import scorer_version  # the registered metrics and their kernel version

GENERATIONS = "generations"
"""Memo namespace of decoded generations (rows keyed by ``cache_ids`` and ``replicate``)."""
RESULTS = "results"
"""Memo namespace of a cell's scored tables."""


def cell_key(info: dict[str, Any], lengths: Sequence[int], decoder_version: str, batching: str,
             libraries: dict[str, Any], device: dict[str, Any]) -> str:
    material = {
        "resolved_revision": info.get("resolved_revision"),
        "weights_sha256": info.get("weights_sha256"),
        "tokenizer_sha256": info.get("tokenizer_sha256"),
        "chat_template_sha256": info.get("chat_template_sha256"),
        "chat_template_policy": info.get("chat_template_policy"),
        "chat_template_kwargs": info.get("chat_template_kwargs"),
        "variant": info.get("variant"),
        "dtype": info.get("dtype"),
        "quantization": info.get("quantization"),
        "attn_implementation": info.get("attn_implementation"),
        "lengths": sorted(int(L) for L in lengths),
        "decoder_version": decoder_version,
        # Which engine chose the tokens and where the readings come from (harness.decode.engines).
        "engine": info.get("engine_name", "hf"),
        "capture": info.get("capture", "generate"),
        "batching": batching,
        "libraries": {k: libraries.get(k) for k in ("torch", "transformers", "bitsandbytes", "vllm")},
        "device": device.get("cuda_device") or "cpu",
        # fp32 CPU products (stability traces) differ in the last bits between GEMM routes (harness.core.gemm).
        "kernels": device.get("kernels"),
    }
    return memo_key(GENERATIONS, material)


def results_key(decode_key: str, pairs: Sequence, lengths: Sequence[int], scaffold: dict | None, name: str,
                embedder_sha: str, store_full_dist: bool = False) -> str:
    """Everything a cell's scored tables depend on beyond its decodes (``store_full_dist``: generations.parquet
    holds the full prompt-end rows)."""
    return memo_key(RESULTS, {
        "decode": decode_key, "scorer": scorer_version(), "embedder": embedder_sha,
        "pairs": [dataclasses.astuple(p) for p in pairs], "lengths": list(lengths),
        "scaffold": scaffold, "name": name, "store_full_dist": store_full_dist,
    })


def ids_key(token_ids: Sequence[int]) -> str:
    """Full token ids as a string: cache hits compare the whole prompt, not a short hash."""
    return ",".join(str(int(i)) for i in token_ids)
