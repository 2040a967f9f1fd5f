"""Loading a registry entry: tokenizer, model, and everything the manifest needs to reproduce it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.hashing import directory_revision, sha256_text, tokenizer_hash, weights_hash
from harness.registry import ModelEntry
from harness.render import RenderPolicy

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class ModelInfo:
    """What was actually loaded; goes verbatim into the manifest."""

    name: str
    source: str
    variant: str
    requested_revision: str | None
    resolved_revision: str | None
    weights_sha256: str | None
    tokenizer_sha256: str | None
    chat_template_sha256: str | None
    chat_template_policy: str
    chat_template_kwargs: dict[str, Any]
    dtype: str
    quantization: str | None
    attn_implementation: str
    trust_remote_code: bool
    architecture: str
    num_parameters: int
    context_length: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    pad_token_note: str
    load_seconds: float


@dataclass
class LoadedModel:
    """A live model and tokenizer (not frozen: holds torch modules)."""

    entry: ModelEntry
    tokenizer: Any
    model: Any
    info: ModelInfo
    policy: RenderPolicy = field(default_factory=lambda: RenderPolicy(True))


def render_policy(entry: ModelEntry) -> RenderPolicy:
    return RenderPolicy(entry.chat_template == "model", dict(entry.chat_template_kwargs))


def check_local_revision(entry: ModelEntry) -> str:
    """Content revision of a local directory, refusing a mismatch with the registry's pin."""
    path = Path(entry.source)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    actual = directory_revision(path)
    if entry.revision is not None and entry.revision != actual:
        raise ValueError(
            f"content revision mismatch: registry pins {entry.revision[:19]}..., directory has {actual[:19]}... "
            "(re-pin with `stabprobe registry pin`)"
        )
    return actual


def load_tokenizer(entry: ModelEntry):
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
    if not entry.is_local and entry.revision:
        kwargs["revision"] = entry.revision
    return AutoTokenizer.from_pretrained(entry.source, **kwargs)


def _snapshot_dir(entry: ModelEntry, revision: str | None) -> Path | None:
    if entry.is_local:
        return Path(entry.source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.source, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - hashes are then recorded as unavailable, not guessed
        return None


def load_model(entry: ModelEntry, variant: str = "bf16") -> LoadedModel:
    """Load one (model, variant). Raises on any failure; the pipeline records it and moves on."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.perf_counter()
    resolved = check_local_revision(entry) if entry.is_local else entry.revision
    if not entry.trust_remote_code:
        _refuse_custom_code(entry)
    tokenizer = load_tokenizer(entry)
    dtype_name = variant if variant in TORCH_DTYPES else entry.dtype
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, TORCH_DTYPES[dtype_name]),
        "attn_implementation": entry.attn_implementation,
        "trust_remote_code": entry.trust_remote_code,
    }
    if not entry.is_local and entry.revision:
        kwargs["revision"] = entry.revision
    quantization = None
    if variant in ("int8", "int4"):
        from transformers import BitsAndBytesConfig

        import bitsandbytes  # noqa: F401 - fail here with a clear ImportError

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if variant == "int8"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        )
        kwargs["device_map"] = "cuda:0" if torch.cuda.is_available() else "cpu"
        quantization = f"bitsandbytes-{variant}" + ("-nf4" if variant == "int4" else "")
    model = AutoModelForCausalLM.from_pretrained(entry.source, **kwargs)
    if "device_map" not in kwargs and torch.cuda.is_available():
        model = model.to("cuda:0")
    model.eval()
    if not entry.is_local:
        resolved = getattr(model.config, "_commit_hash", None) or resolved

    eos = _eos_ids(tokenizer, model)
    pad, pad_note = _pad_id(tokenizer, eos)
    template = getattr(tokenizer, "chat_template", None) if entry.chat_template == "model" else None
    snap = _snapshot_dir(entry, resolved)
    info = ModelInfo(
        name=entry.name,
        source=entry.source,
        variant=variant,
        requested_revision=entry.revision,
        resolved_revision=resolved,
        weights_sha256=weights_hash(snap) if snap else None,
        tokenizer_sha256=tokenizer_hash(snap) if snap else None,
        chat_template_sha256=sha256_text(template) if template else None,
        chat_template_policy=entry.chat_template,
        chat_template_kwargs=dict(entry.chat_template_kwargs),
        dtype=dtype_name,
        quantization=quantization,
        attn_implementation=getattr(model.config, "_attn_implementation", entry.attn_implementation),
        trust_remote_code=entry.trust_remote_code,
        architecture=(model.config.architectures or [type(model).__name__])[0],
        num_parameters=int(sum(p.numel() for p in model.parameters())),
        context_length=_context_length(model.config),
        eos_token_ids=eos,
        pad_token_id=pad,
        pad_token_note=pad_note,
        load_seconds=round(time.perf_counter() - t0, 3),
    )
    return LoadedModel(entry, tokenizer, model, info, render_policy(entry))


def _refuse_custom_code(entry: ModelEntry) -> None:
    """A local directory whose config asks for custom code is refused unless the entry opts in."""
    if not entry.is_local:
        return  # transformers itself refuses hub custom code when trust_remote_code is False
    import json

    cfg = Path(entry.source) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {cfg}: {exc}") from None
    if data.get("auto_map"):
        raise PermissionError(
            f"{cfg} requires custom code (auto_map); set `trust_remote_code: true` in this model's "
            "registry entry after reviewing the code"
        )


def _eos_ids(tokenizer, model) -> tuple[int, ...]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (tokenizer.eos_token_id, gen_eos):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return tuple(sorted(ids))


def _pad_id(tokenizer, eos: tuple[int, ...]) -> tuple[int, str]:
    # Padding is masked out, so its id never reaches attention; we only need a valid id.
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id), "tokenizer pad token"
    if eos:
        return eos[0], "no pad token: EOS id used for (masked) left padding"
    return 0, "no pad or EOS token: id 0 used for (masked) left padding"


def _context_length(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    text_cfg = getattr(config, "text_config", None)
    return _context_length(text_cfg) if text_cfg is not None else None


def validate_variants(entry: ModelEntry, variants: list[str], where: str) -> None:
    for v in variants:
        if v not in TORCH_DTYPES and v not in ("int8", "int4"):
            raise InputError(where, v, "unknown variant (expected bf16, fp16, fp32, int8, int4)")
