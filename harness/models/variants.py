"""Variant names: the weights a model is loaded with, plus optional template overrides.

``bf16``, ``fp16``, ``fp32`` (dtype), ``int8``, ``int4`` (bitsandbytes, nf4), each
optionally suffixed ``-nothink``: the same weights decoded with
``enable_thinking=False`` passed to the chat template (the thinking-off control),
and optionally ``@<engine>`` (``@hf``, ``@vllm``, any engine declared in harness.core.engines):
the engine that decodes it (harness.decode.engines).
A name without ``@`` takes the run's engine (``--engine``, else the registry's);
the run spells a vLLM variant ``bf16@vllm`` in every table, so ``bf16@vllm``
against ``bf16`` (or ``bf16@hf``) on the same model is the engine's drift.

GGUF file types (``f16``, ``q8_0``, ``q6_k``, ``q5_k_m``, ``q4_k_m``,
``q3_k_m``, ``q2_k``, ``q4_1``; GGUF_WEIGHTS) exist only as llama.cpp files:
they are always the ``llamacpp`` engine's and are spelt ``q4_k_m@llamacpp``
(harness.models.gguf_build makes them from the bf16 model). ``bf16@llamacpp``
is the BF16 GGUF.
"""

from __future__ import annotations

import re

from harness.core.engines import DEFAULT_ENGINE, engine_names
from harness.models.records import VariantSpec

WEIGHTS = ("bf16", "fp16", "fp32", "int8", "int4")
GGUF_WEIGHTS = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k", "q4_1")
"""llama.cpp file types (harness.models.gguf_build.FILE_TYPES): only the ``llamacpp`` engine decodes them."""
GGUF_ENGINE = "llamacpp"
REFERENCE = "bf16"
ENGINE_FLOOR = {GGUF_ENGINE: "f16@llamacpp"}
"""Per engine whose files are quantized, its unquantized file: read against the HF reference it is the engine floor
(what the engine and the file format alone change), the row every quantized row of that engine is read beside."""
_PATTERN = re.compile(rf"^({'|'.join(WEIGHTS + GGUF_WEIGHTS)})(-nothink)?(@([a-z0-9_]+))?$")


def _match(name: str) -> re.Match | None:
    # The engine part is checked against the declarations at call time: an engine declared after import
    # (a plug-in, a test's) parses like a built-in one.
    m = _PATTERN.match(name)
    if m and m.group(1) in GGUF_WEIGHTS and m.group(4) not in (None, GGUF_ENGINE):
        return None  # a GGUF file type on another engine does not exist
    return m if m and (m.group(4) is None or m.group(4) in engine_names()) else None


def parse_variant(name: str) -> VariantSpec:
    m = _match(name)
    if not m:
        raise ValueError(f"unknown variant {name!r} (expected one of {', '.join(WEIGHTS)}, optionally with -nothink "
                         f"and @{'|@'.join(engine_names())}; or a GGUF type {', '.join(GGUF_WEIGHTS)} "
                         f"with @{GGUF_ENGINE})")
    overrides = {"enable_thinking": False} if m.group(2) else {}
    engine = m.group(4) or (GGUF_ENGINE if m.group(1) in GGUF_WEIGHTS else None)
    return VariantSpec(name, m.group(1), overrides, engine)


def with_engine(name: str, default_engine: str) -> str:
    """The run's spelling of a variant: ``@<engine>`` added when its engine is not the default (hf), anything
    written kept."""
    spec = parse_variant(name)
    if "@" not in name and spec.weights in GGUF_WEIGHTS:
        return f"{name}@{GGUF_ENGINE}"  # a GGUF type is always llama.cpp's: every table spells it so
    return f"{name}@{default_engine}" if spec.engine is None and default_engine != DEFAULT_ENGINE else name


def engine_of(name: str) -> str:
    """The engine of a variant as the run spells it (see with_engine)."""
    return parse_variant(name).engine or DEFAULT_ENGINE


def base_name(name: str) -> str:
    """The variant without its engine (``bf16@vllm`` -> ``bf16``)."""
    return name.split("@", 1)[0]


def is_valid_variant(name: str) -> bool:
    return _match(name) is not None
