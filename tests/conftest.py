"""Shared fixtures. Everything here is real: demo models committed under models/,
the real MiniLM embedder, real chat templates of published models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = ROOT / "models"

# Ray writes an auth token under $HOME unless told not to; keep tests hermetic.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# CLI runs default to ~/.cache/stabprobe; tests must neither read a user's cache nor fill it.
os.environ["STABPROBE_CACHE"] = tempfile.mkdtemp(prefix="stabprobe-test-cache-")
# One decode worker unless a test asks for more (tests/run/test_workers.py): in-process fault injection
# (monkeypatch) reaches no worker process, and a worker pool per run would slow the suite.
os.environ["STABPROBE_WORKERS"] = "1"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_chat_dir() -> Path:
    return MODELS / "tiny-chat"


@pytest.fixture(scope="session")
def demo_tokenizer(tiny_chat_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_chat_dir))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def demo_ladder(name: str, edit_kinds: list[str], *, in_domain: bool = False, paraphrase: bool = False,
                extra: str = "") -> str:
    """The YAML of a ladder on the demo models' two home prompts (reverse a word, add two numbers), which most run
    tests need and no more: ``paraphrase`` gives the first a curated paraphrase, ``in_domain`` marks both as the
    demo models' own domain, ``extra`` appends further prompt lines (YAML flow mappings, two-space indented)."""
    dom = ", in_domain: true" if in_domain else ""
    cur = ', curated: {paraphrase: ["Spell apple backwards."]}' if paraphrase else ""
    return (f"ladder: {name}\nedit_kinds: [{', '.join(edit_kinds)}]\nprompts:\n"
            f'  - {{id: rev, topic: demo-reverse{dom}, text: "Reverse the word apple."{cur}}}\n'
            f'  - {{id: add, topic: demo-arithmetic{dom}, text: "What is 7 plus 5?"}}\n' + extra)


# -- published tokenizers and random-init models on them (tests/fixtures/real_models.py) --------------


@pytest.fixture(scope="session")
def real_tokenizer(tmp_path_factory):
    """``real_tokenizer("qwen3")``: the published tokenizer of a family, loaded once per session."""
    from transformers import AutoTokenizer

    from fixtures.real_models import tokenizer_dir

    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(str(tokenizer_dir(family, tmp_path_factory.mktemp(f"tok-{family}"))))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory, real_tokenizer):
    """``real_model_dir("qwen3")``: a saved random-init model of the family on its real vocabulary, built once."""
    from fixtures.real_models import build_model_dir

    cache: dict = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_model_dir(family, tmp_path_factory.mktemp(f"model-{family}"),
                                            tokenizer=real_tokenizer(family))
        return cache[family]

    return get


@pytest.fixture
def one_thread():
    """torch on one thread for the test, the previous count restored: a CPU run's default (harness.run.config),
    because with two threads the bf16 GEMMs split work by batch size, so no batching is batch-invariant (README,
    Determinism); and small models are latency-bound, two OpenMP threads oversubscribe a shared 2-core runner."""
    from harness.core.threads import torch_threads

    with torch_threads(1):
        yield
