"""Generation cache: a decode is reused only when everything it depends on is the same.

One parquet file per *cell key* (model revision and weights, tokenizer and
template, variant, dtype, quantization, attention, lengths, decoder version,
batching mode, library versions, device); inside it, one row per (prompt token
ids, replicate). Files are replaced atomically, so two runs sharing a cache can
only lose each other's newest additions (re-decoded next time), never corrupt
a file. Each file carries a checksum (harness.core.checked): a damaged one is
rejected, counted and re-decoded, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.core.checked import read_checked, reject, write_checked


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
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class GenerationCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.parquet.checked"

    def load(self, key: str) -> pd.DataFrame:
        path = self._path(key)
        payload = read_checked(path)
        if payload is None:
            return pd.DataFrame()
        try:
            return pd.read_parquet(io.BytesIO(payload))
        except Exception:  # noqa: BLE001 - checksum right but not our parquet (another version): a miss
            reject(path)
            return pd.DataFrame()

    def store(self, key: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        old = self.load(key)
        merged = pd.concat([old, frame], ignore_index=True) if not old.empty else frame
        merged = merged.drop_duplicates(subset=["cache_ids", "replicate"], keep="last")
        buf = io.BytesIO()
        merged.to_parquet(buf, index=False)
        write_checked(self._path(key), buf.getvalue())


def ids_key(token_ids: Sequence[int]) -> str:
    """Full token ids as a string: cache hits compare the whole prompt, not a short hash."""
    return ",".join(str(int(i)) for i in token_ids)
