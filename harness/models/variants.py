"""Variant names: the weights a model is loaded with, plus optional template overrides.

``bf16``, ``fp16``, ``fp32`` (dtype), ``int8``, ``int4`` (bitsandbytes, nf4), each
optionally suffixed ``-nothink``: the same weights decoded with
``enable_thinking=False`` passed to the chat template (the thinking-off control).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

WEIGHTS = ("bf16", "fp16", "fp32", "int8", "int4")
REFERENCE = "bf16"
_PATTERN = re.compile(rf"^({'|'.join(WEIGHTS)})(-nothink)?$")


@dataclass(frozen=True)
class VariantSpec:
    name: str
    weights: str
    template_overrides: dict[str, Any] = field(default_factory=dict)


def parse_variant(name: str) -> VariantSpec:
    m = _PATTERN.match(name)
    if not m:
        raise ValueError(f"unknown variant {name!r} (expected one of {', '.join(WEIGHTS)}, optionally with -nothink)")
    overrides = {"enable_thinking": False} if m.group(2) else {}
    return VariantSpec(name, m.group(1), overrides)


def is_valid_variant(name: str) -> bool:
    return bool(_PATTERN.match(name))
