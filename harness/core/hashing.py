"""Content hashes: the revision of a local model and the fingerprints in the manifest."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterable

# Files that do not change what a model computes; excluded from content
# revisions so re-writing a README or a training log does not "change" a model.
_NOT_CONTENT = {"README.md", "training.json", ".gitattributes"}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Digest of a file, computed once per (path, size, mtime) in a process.

    A run hashes the same weights for the content revision, the weights hash and
    every variant; on a multi-GB checkpoint re-reading them is minutes of I/O.
    """
    st = Path(path).stat()
    return _sha256_file(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=4096)
def _sha256_file(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_files(root: Path, files: Iterable[Path]) -> str:
    """One digest over (relative path, file digest) pairs, order-independent."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def content_files(root: Path) -> list[Path]:
    return [
        p
        for p in Path(root).rglob("*")
        # .cache inside the model directory, not above it: a directory under ~/.cache (the harness's own store of
        # converted GGUF models) would otherwise hash as empty.
        if p.is_file() and p.name not in _NOT_CONTENT and ".cache" not in p.relative_to(root).parts
    ]


def directory_revision(root: Path) -> str:
    """Content revision of a local model directory: ``sha256:<hex>``."""
    return "sha256:" + hash_files(Path(root), content_files(Path(root)))


def weights_hash(root: Path) -> str:
    files = [p for p in content_files(root) if p.name.endswith(WEIGHT_SUFFIXES)]
    return "sha256:" + hash_files(Path(root), files)


def tokenizer_hash(root: Path) -> str:
    files = [p for p in content_files(root) if p.name in TOKENIZER_FILES]
    return "sha256:" + hash_files(Path(root), files)
