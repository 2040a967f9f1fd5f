"""Loading a registry entry: tokenizer, model, and everything the manifest needs to reproduce it."""

from __future__ import annotations

import os

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import InputError
from harness.core.hashing import TOKENIZER_FILES, directory_revision, sha256_text, tokenizer_hash, weights_hash
from harness.models.records import LinearInvariance, ModelInfo, TraceHeadCheck
from harness.models.registry import ModelEntry, model_dir_problem
from harness.audit.records import RenderPolicy

if TYPE_CHECKING:
    from harness.stability.head import HeadSpec

StabilityHead = tuple["HeadSpec", Any]
"""The output head as the closed forms model it, and its squared row norms (a torch tensor)."""

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass
class LoadedModel:
    """A tokenizer, the model's description, and its weights once needed (not frozen: holds torch modules)."""

    entry: ModelEntry
    tokenizer: Any
    _model: Any
    info: ModelInfo
    policy: RenderPolicy = field(default_factory=lambda: RenderPolicy(True))
    _load_weights: Any = None
    weights_seconds: float = 0.0
    # What the decode stage learns about this model and keeps for the rest of the cell (and the manifest).
    batching_used: str | None = None
    """Batching mode of the last decode (harness.decode.greedy.decode_all): 'rows', 'bucket' or 'padded'."""
    rows_unsupported: str | None = None
    """Why this model cannot run rows batching (its decodes then use bucket batching); None when it can or was not tried."""
    linear_invariance: LinearInvariance | None = None
    """Whether this model's linear layers round the same at every batch size on this machine (probed at its first
    decode, harness.decode.invariant; None before), and the chunking used when not."""
    head_check: TraceHeadCheck | None = None
    """The closed-form head checked against the model's logits (harness.decode.greedy.check_trace_head); None: not yet."""
    stability: StabilityHead | None = None
    """(HeadSpec, squared row norms) the closed-form traces are computed with (:meth:`stability_head`); None when not
    built yet, unsupported, or failed the head check (``stability_status`` says which)."""
    stability_status: str | None = None
    """'ok', 'unavailable: <why>' or 'head check failed: <by how much>'; None while :meth:`stability_head` was not called."""

    @property
    def model(self):
        if self._model is None:
            t = time.perf_counter()
            self._model = self._load_weights()
            self.weights_seconds = round(time.perf_counter() - t, 3)
        return self._model

    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    def stability_head(self) -> StabilityHead | None:
        """(HeadSpec, row norms) for the closed-form traces, built once; None when unsupported (reason kept)."""
        if self.stability_status is None:
            try:
                from harness.stability import head_from_model, row_norms_sq

                spec = head_from_model(self.model)
                self.stability = (spec, row_norms_sq(spec))
                self.stability_status = "ok"
            except ValueError as exc:  # UnsupportedHead: an output map the closed forms do not model
                self.stability = None
                self.stability_status = f"unavailable: {exc}"
        return self.stability

    @property
    def stability_note(self) -> str:
        """For the manifest: ``stability_status``, or why there is none ('from cache': no weights were loaded, every
        decode was cached; 'n/a': the traces were never asked for)."""
        if self.stability_status is not None:
            return self.stability_status
        return "from cache" if not self.weights_loaded else "n/a"


def render_policy(entry: ModelEntry, variant: str = "bf16") -> RenderPolicy:
    from harness.models.variants import parse_variant

    kwargs = {**entry.chat_template_kwargs, **parse_variant(variant).template_overrides}
    file = entry.template_file
    if file is not None:
        from harness.audit.render import load_template_file

        return RenderPolicy(True, kwargs, template_override=load_template_file(str(file)), template_date=entry.template_date,
                            template_source=str(file))
    return RenderPolicy(entry.chat_template == "model", kwargs, template_date=entry.template_date)


def check_local_revision(entry: ModelEntry) -> str:
    """Content revision of a local directory, refusing a mismatch with the registry's pin."""
    path = Path(entry.source)
    problem = model_dir_problem(path)
    if problem is not None:
        raise ValueError(f"source: {problem}")
    actual = directory_revision(path)
    if entry.revision is not None and entry.revision != actual:
        raise ValueError(
            f"content revision mismatch: registry pins {entry.revision[:19]}..., directory has {actual[:19]}... "
            "(re-pin with `stabprobe registry pin`)"
        )
    return actual


def load_tokenizer(entry: ModelEntry):
    from transformers import AutoTokenizer

    entry, _ = gguf_as_local(entry)  # the drift stage reads a model's tokenizer from its registry entry

    kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
    if entry.is_local and not any((Path(entry.source) / f).is_file() for f in TOKENIZER_FILES
                                  if not f.startswith("chat_template")):
        # transformers' own message for this is several lines long and names no file.
        raise ValueError(f"{entry.source}: no tokenizer files (expected tokenizer.json, tokenizer.model, "
                         "or vocab.json with merges.txt, next to config.json)")
    if entry.is_local:
        check_template_files(Path(entry.source))
    if not entry.is_local and entry.revision:
        kwargs["revision"] = entry.revision
    try:
        return AutoTokenizer.from_pretrained(entry.source, **kwargs)
    except Exception:
        tokenizer_json = Path(entry.source) / "tokenizer.json"
        if entry.is_local and tokenizer_json.is_file():
            # transformers names neither the file nor the field of a damaged tokenizer.json (issue 34).
            from harness.models.tokenizer_file import tokenizer_json_problem

            problem = tokenizer_json_problem(tokenizer_json)
            if problem is not None:
                raise ValueError(f"{tokenizer_json}: {problem}; restore the file from the model's source") from None
        raise


MAX_TEMPLATE_BYTES = 1_000_000
"""Largest chat template file read (published templates are a few KB)."""


def check_template_files(root: Path) -> None:
    """A model directory's chat template files are regular, bounded, UTF-8 files, else ValueError naming the file.

    transformers skips a template file it cannot use and the model would be decoded on the raw prompt text
    (a dangling link: status ok, positive control 0.557 instead of 0.781), or reads ``/dev/zero`` for ever.
    """
    for name in ("chat_template.jinja", "chat_template.json"):
        path = root / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() and not path.exists():
            raise ValueError(f"{path}: chat template is a dangling symbolic link (to {os.readlink(path)})")
        if not path.is_file():
            raise ValueError(f"{path}: chat template is not a regular file")
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise ValueError(f"{path}: chat template is {size:,} bytes; the limit is {MAX_TEMPLATE_BYTES:,}")
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: chat template is not UTF-8 (byte {exc.start})") from None
        except OSError as exc:
            raise ValueError(f"{path}: chat template cannot be read ({exc.strerror})") from None


def _snapshot_dir(entry: ModelEntry, revision: str | None) -> Path | None:
    if entry.is_local:
        return Path(entry.source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.source, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - hashes are then recorded as unavailable, not guessed
        return None


def load_model(entry: ModelEntry, variant: str = "bf16", lazy: bool = False) -> LoadedModel:
    """Describe one (model, variant) from its files and load its weights (now, or on first use when lazy).

    Everything the manifest and the generation cache key need (revision,
    hashes, template, dtype, quantization, architecture, context) is read
    without the weights, so a fully cached re-run never loads them. Raises on
    any failure; the pipeline records it and moves on.
    """
    import torch
    from transformers import AutoConfig, GenerationConfig

    from harness.models.variants import parse_variant

    spec = parse_variant(variant)
    t0 = time.perf_counter()
    requested = entry.revision  # a GGUF source's pin is the file's sha256; the converted directory is resolved_revision
    entry, conversion = gguf_as_local(entry)
    resolved = check_local_revision(entry) if entry.is_local else entry.revision
    if not entry.trust_remote_code:
        _refuse_custom_code(entry)
    tokenizer = load_tokenizer(entry)
    hub_kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
    if not entry.is_local and entry.revision:
        hub_kwargs["revision"] = entry.revision
    config = AutoConfig.from_pretrained(entry.source, **hub_kwargs)
    if not entry.is_local:
        resolved = getattr(config, "_commit_hash", None) or resolved
    try:
        gen_config = GenerationConfig.from_pretrained(entry.source, **{k: v for k, v in hub_kwargs.items() if k == "revision"})
    except OSError:  # no generation_config.json: EOS comes from the tokenizer alone (recorded)
        gen_config = None
    dtype_name = spec.weights if spec.weights in TORCH_DTYPES else entry.dtype
    kwargs: dict[str, Any] = {
        **hub_kwargs,
        "dtype": getattr(torch, TORCH_DTYPES[dtype_name]),
        "attn_implementation": entry.attn_implementation,
    }
    quantization = None
    if spec.weights in ("int8", "int4"):
        from transformers import BitsAndBytesConfig

        import bitsandbytes  # noqa: F401 - fail here with a clear ImportError

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if spec.weights == "int8"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        )
        kwargs["device_map"] = "cuda:0" if torch.cuda.is_available() else "cpu"
        quantization = (
            "bitsandbytes-int8 (LLM.int8; MatMul8bitLt casts bf16 activations to fp16)"
            if spec.weights == "int8"
            else "bitsandbytes-int4-nf4 (compute dtype bf16)"
        )

    eos = _eos_ids(tokenizer, gen_config)
    pad, pad_note = _pad_id(tokenizer, eos)
    policy = render_policy(entry, variant)
    # The template actually rendered: the entry's .jinja file when it names one, else the tokenizer's.
    template = (policy.template_override or getattr(tokenizer, "chat_template", None)) if policy.use_chat_template else None
    snap = _snapshot_dir(entry, resolved)
    info = ModelInfo(
        name=entry.name,
        source=entry.source,
        variant=variant,
        requested_revision=requested,
        resolved_revision=resolved,
        weights_sha256=weights_hash(snap) if snap else None,
        tokenizer_sha256=tokenizer_hash(snap) if snap else None,
        chat_template_sha256=sha256_text(template) if template else None,
        chat_template_policy=entry.chat_template,
        chat_template_kwargs={**entry.chat_template_kwargs, **spec.template_overrides},
        template_date=entry.template_date,
        dtype=dtype_name,
        quantization=quantization,
        attn_implementation=entry.attn_implementation,
        trust_remote_code=entry.trust_remote_code,
        architecture=(getattr(config, "architectures", None) or [type(config).__name__])[0],
        num_parameters=_count_parameters(snap) if snap else -1,
        context_length=_context_length(config),
        eos_token_ids=eos,
        pad_token_id=pad,
        pad_token_note=pad_note,
        load_seconds=round(time.perf_counter() - t0, 3),
        chat_template_source=policy.template_source if policy.use_chat_template else None,
        conversion=conversion,
    )

    def load_weights():
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(entry.source, **kwargs)
        if "device_map" not in kwargs and torch.cuda.is_available():
            model = model.to("cuda:0")
        model.eval()
        used = getattr(model.config, "_attn_implementation", entry.attn_implementation)
        if used != entry.attn_implementation:
            # Never silently: a different kernel changes the numbers.
            raise RuntimeError(f"asked for attn_implementation={entry.attn_implementation!r}, transformers used {used!r}")
        return model

    loaded = LoadedModel(entry, tokenizer, None, info, policy, load_weights)
    if not lazy:
        _ = loaded.model
    return loaded


def gguf_as_local(entry: ModelEntry) -> tuple[ModelEntry, dict[str, Any] | None]:
    """A GGUF-sourced entry as its converted local directory (converted once, harness.models.gguf); others as they are."""
    from harness.models import gguf

    if not gguf.is_gguf_source(entry.source):
        return entry, None
    path, conversion = gguf.materialize(entry.source, entry.revision or "", entry.dtype)
    return entry.model_copy(update={"source": str(path), "revision": conversion["converted_revision"]}), conversion


def _count_parameters(root: Path) -> int:
    """Parameter count from safetensors headers (no weights read); -1 when the format is not safetensors."""
    import json
    import struct

    total, found = 0, False
    for f in sorted(Path(root).glob("*.safetensors")):
        found = True
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total if found else -1


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


def _eos_ids(tokenizer, gen_config) -> tuple[int, ...]:
    ids: set[int] = set()
    gen_eos = getattr(gen_config, "eos_token_id", None)
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
