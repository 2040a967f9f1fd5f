"""Variant names: the weights a model is loaded with, plus optional template overrides.

``bf16``, ``fp16``, ``fp32`` (dtype), ``int8``, ``int4`` (bitsandbytes, nf4), each
optionally suffixed ``-nothink``: the same weights decoded with
``enable_thinking=False`` passed to the chat template (the thinking-off control),
and optionally ``@hf`` or ``@vllm``: the engine that decodes it (harness.decode.engines).
A name without ``@`` takes the run's engine (``--engine``, else the registry's);
the run spells a vLLM variant ``bf16@vllm`` in every table, so ``bf16@vllm``
against ``bf16`` (or ``bf16@hf``) on the same model is the engine's drift.
"""

from __future__ import annotations

import re

from harness.models.records import VariantSpec

WEIGHTS = ("bf16", "fp16", "fp32", "int8", "int4")
ENGINE_NAMES = ("hf", "vllm")
REFERENCE = "bf16"
_PATTERN = re.compile(rf"^({'|'.join(WEIGHTS)})(-nothink)?(@({'|'.join(ENGINE_NAMES)}))?$")


def parse_variant(name: str) -> VariantSpec:
    m = _PATTERN.match(name)
    if not m:
        raise ValueError(f"unknown variant {name!r} (expected one of {', '.join(WEIGHTS)}, optionally with -nothink "
                         f"and @{'|@'.join(ENGINE_NAMES)})")
    overrides = {"enable_thinking": False} if m.group(2) else {}
    return VariantSpec(name, m.group(1), overrides, m.group(4))


def with_engine(name: str, default_engine: str) -> str:
    """The run's spelling of a variant: ``@vllm`` added when its engine is vLLM, anything written kept."""
    spec = parse_variant(name)
    return f"{name}@{default_engine}" if spec.engine is None and default_engine != "hf" else name


def engine_of(name: str) -> str:
    """The engine of a variant as the run spells it (see with_engine)."""
    return parse_variant(name).engine or "hf"


def base_name(name: str) -> str:
    """The variant without its engine (``bf16@vllm`` -> ``bf16``)."""
    return name.split("@", 1)[0]


def is_valid_variant(name: str) -> bool:
    return bool(_PATTERN.match(name))
