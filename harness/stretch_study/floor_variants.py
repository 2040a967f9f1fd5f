"""Weight variants of the floor study: the harness's own (dtype, bitsandbytes), optimum-quanto and llama.cpp's GGUF.

bitsandbytes ``int8`` / ``int4`` (nf4) load through :func:`harness.models.loading.load_model`
as in every run. optimum-quanto adds weight-only ``int8``/``int4``/``int2``
(``QuantoConfig``), which loads and runs on CPU (measured: transformers 5.24,
optimum-quanto 0.2.7); its 2-bit scheme is the lowest width offered on CPU by
a maintained library here (bitsandbytes has none below 4, torchao int4 fails
on CPU, HQQ is not wired into transformers; ENVIRONMENT.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.errors import InputError
from harness.models.loading import LoadedModel, load_model
from harness.models.registry import ModelEntry
from harness.stretch_study.floor_gguf import GGUF_FLOOR, LADDER_ALIAS, load_gguf_variant

FLOOR_VARIANTS: dict[str, tuple[int, str]] = {
    "fp32": (32, "dtype"),
    "bf16": (16, "dtype"),
    "fp16": (16, "dtype"),
    "int8": (8, "bitsandbytes"),
    "int4": (4, "bitsandbytes"),
    "quanto-int8": (8, "optimum-quanto"),
    "quanto-int4": (4, "optimum-quanto"),
    "quanto-int2": (2, "optimum-quanto"),
    **{v: (bits, "llama.cpp") for v, bits in GGUF_FLOOR.items()},
}
"""Variant name -> (weight bits, library)."""
REFERENCE = "bf16"


def parse_floor_variants(text: str | tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(x.strip() for x in (text.split(",") if isinstance(text, str) else text) if x.strip())
    # `llamacpp`: the whole GGUF ladder (harness.stretch_study.floor_gguf)
    names = tuple(n for x in names for n in (tuple(GGUF_FLOOR) if x == LADDER_ALIAS else (x,)))
    bad = [n for n in names if n not in FLOOR_VARIANTS]
    if bad or not names:
        raise InputError("--variants", ",".join(names), f"unknown variant {bad[0] if bad else ''!r}: expected some of "
                         f"{', '.join(FLOOR_VARIANTS)}")
    if len(set(names)) != len(names):
        raise InputError("--variants", ",".join(names), "duplicate variant")
    if REFERENCE not in names:
        names = (REFERENCE, *names)  # drift is measured against it
    return tuple(sorted(names, key=lambda n: (-FLOOR_VARIANTS[n][0], n != REFERENCE, n)))


def load_floor_variant(entry: ModelEntry, variant: str, loader=load_model) -> Any:
    """A LoadedModel for any floor variant (quanto ones built on the bf16 description, weights quantized)."""
    if variant in GGUF_FLOOR:
        return load_gguf_variant(entry, variant, loader)
    if not variant.startswith("quanto-"):
        return loader(entry, variant)
    import torch

    import optimum.quanto  # noqa: F401 - fail here with a clear ImportError when it is not installed

    weights = variant.split("-", 1)[1]
    base = loader(entry, "bf16", lazy=True)

    def load_weights():
        from transformers import AutoModelForCausalLM, QuantoConfig

        kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
        if not entry.is_local and entry.revision:
            kwargs["revision"] = entry.revision
        model = AutoModelForCausalLM.from_pretrained(entry.source, dtype=torch.bfloat16,
                                                     attn_implementation=entry.attn_implementation,
                                                     quantization_config=QuantoConfig(weights=weights), **kwargs)
        if torch.cuda.is_available():  # as harness.models.loading does for unquantized weights
            model = model.to("cuda:0")
        return model.eval()

    info = dataclasses.replace(base.info, variant=variant,
                               quantization=f"optimum-quanto {weights} weight-only (default group size, bf16 activations)")
    loaded = LoadedModel(entry, base.tokenizer, None, info, base.policy, load_weights)
    _ = loaded.model
    return loaded
