"""The model registry: validated entries, and resolution of ``--models``.

A ``--models`` item is either a registry name or a path to a local model
directory; both become a :class:`ModelEntry`, so every later stage sees one kind
of record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import InputError, pydantic_error_to_input_error
from harness.core.engines import DEFAULT_ENGINE, engine_decl
from harness.core.hashing import directory_revision
from harness.audit.template_clock import DEFAULT_TEMPLATE_DATE, parse_template_date
from harness.core.yaml_strict import load_yaml_strict
from harness.core.resources import data_path

DEFAULT_REGISTRY = data_path("model_registry.yaml")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_CONTENT = re.compile(r"^sha256:[0-9a-f]{64}$")

Dtype = Literal["bf16", "fp16", "fp32"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scaffold(_Strict):
    """Delimiters of a reasoning preamble the scorer strips to get the answer span."""

    open: str | None = Field(None, description="Text that opens the scaffold; None when only a close marker exists.")
    close: str | None = Field(
        ..., description="Text that ends the scaffold; the answer starts after it. null: the end is not known "
        "(no published marker): an opened scaffold ends only at an answer marker, else it is unclosed."
    )
    opened_by_template: bool = Field(
        False, description="The chat template already opens the scaffold, so outputs hold only the close."
    )
    answer_markers: tuple[str, ...] = Field(
        (), description="Final-answer markers (e.g. 'Final Answer:'); the answer starts after the last one."
    )


class ModelEntry(_Strict):
    """One model as the harness loads it. Field docs are the registry's documentation."""

    name: str = Field(..., description="Short unique name used on the command line.")
    source: str = Field(..., description="Hub id (owner/name), a local directory path, or a GGUF file: a path, or "
                        "package:<dist>==<version>/<file in the wheel> (harness.models.gguf; revision pins its sha256).")
    revision: str | None = Field(
        None, description="40-hex hub commit, or sha256:<hex> content hash for local models; None = unpinned."
    )
    family: str = Field("unknown", description="Model family, e.g. qwen3.5.")
    params: str = Field("unknown", description="Parameter count as published, e.g. 0.8B.")
    kind: Literal["base", "instruct", "reasoning"] = Field("instruct")
    dtype: Dtype = Field("bf16", description="Reference dtype of the bf16 variant.")
    attn_implementation: Literal["eager", "sdpa"] = Field(
        "eager", description="eager is batch-invariant in bf16 on CPU; sdpa is faster but may not be."
    )
    chat_template: str = Field(
        "model", description="model: render through the tokenizer's own template; none: raw prompt text; "
        "path/to/file.jinja (relative to the registry file): that template instead (hashed and recorded), e.g. a "
        "fixed copy of a published template that does not render."
    )
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    template_date: str = Field(
        DEFAULT_TEMPLATE_DATE,
        description="The date a template that calls strftime_now sees: YYYY-MM-DD (frozen, so prompts do not "
        "change from day to day) or 'today' (the real clock; recorded per run).",
    )
    engine: str = Field(
        DEFAULT_ENGINE, description="Decode engine of variants that do not name one, one of the engines declared in "
        "harness.core.engines: hf (transformers generate), vllm (token ids from vLLM, readings from the "
        "teacher-forced probe), ...; --engine overrides it.",
    )
    scaffold: Scaffold | None = None
    trust_remote_code: bool = Field(False, description="Only an entry may opt in; never the command line.")
    variants: tuple[str, ...] = Field(
        ("bf16",), description="bf16 / fp16 / fp32 / int8 / int4, optionally -nothink (see harness.models.variants)."
    )
    notes: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @field_validator("chat_template")
    @classmethod
    def _chat_template(cls, v: str) -> str:
        if v not in ("model", "none") and not v.endswith(".jinja"):
            raise ValueError("expected 'model', 'none' or a path to a .jinja file")
        return v

    @property
    def template_file(self) -> Path | None:
        """The template file the entry names, or None for model / none."""
        return None if self.chat_template in ("model", "none") else Path(self.chat_template)

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        engine_decl(v)  # ValueError naming the declared engines
        return v

    @field_validator("template_date")
    @classmethod
    def _template_date(cls, v: str) -> str:
        parse_template_date(v)
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from harness.models.variants import parse_variant

        for name in v:
            parse_variant(name)
        if len(set(v)) != len(v):
            raise ValueError("duplicate variant")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _revision_form(self) -> "ModelEntry":
        if self.revision is not None and not (_HEX40.match(self.revision) or _CONTENT.match(self.revision)):
            raise ValueError("revision must be a 40-hex commit or sha256:<64 hex>")
        return self

    @model_validator(mode="after")
    def _gguf_source(self) -> "ModelEntry":
        from harness.models.gguf import is_gguf_source, source_problem

        problem = source_problem(self.source, self.revision) if is_gguf_source(self.source) else None
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def is_local(self) -> bool:
        return is_local_source(self.source)


class Registry(_Strict):
    models: tuple[ModelEntry, ...]
    path: str = ""

    def by_name(self) -> dict[str, ModelEntry]:
        return {m.name: m for m in self.models}


def is_local_source(source: str) -> bool:
    """Local sources are written as paths (./, ../, /, ~); hub ids are exactly owner/name.

    ``models/x`` is read as a hub id even if such a folder exists, so the same
    registry means the same thing from every working directory.
    """
    return source.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", source)


def load_registry(path: Path = DEFAULT_REGISTRY) -> Registry:
    path = Path(path)
    raw = load_yaml_strict(path)
    if not isinstance(raw, dict) or "models" not in raw:
        raise InputError(str(path), "models", "expected a mapping with a 'models' list")
    extra = set(raw) - {"models"}
    if extra:
        raise InputError(str(path), sorted(extra)[0], "unknown key")
    if not isinstance(raw["models"], list):
        raise InputError(str(path), "models", "expected a list of entries")
    entries = []
    for i, item in enumerate(raw["models"]):
        try:
            entry = ModelEntry.model_validate(item)
        except ValidationError as exc:
            raise pydantic_error_to_input_error(str(path), exc, prefix=f"models[{i}]") from None
        if entry.is_local and not entry.source.startswith("package:"):  # package: a wheel's file (harness.models.gguf)
            # Local sources are relative to the registry file, not the cwd.
            src = Path(entry.source).expanduser()
            if not src.is_absolute():
                src = (path.parent / src).resolve()
            entry = entry.model_copy(update={"source": str(src)})
        if entry.template_file is not None:
            entry = entry.model_copy(update={"chat_template": _template_path(path, i, entry.template_file)})
        entries.append(entry)
    names = [e.name for e in entries]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise InputError(str(path), f"models[{i}].name", f"duplicate name {n!r}")
    return Registry(models=tuple(entries), path=str(path))


def model_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a local model directory, or None; checked before anything in it is read or hashed.

    A registry ``source`` pointing at ``../../etc`` or a file would otherwise be hashed file by file.
    """
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a model directory"
    if not (path / "config.json").is_file():
        return f"{path} is not a model directory (no config.json)"
    return None


def _template_path(registry: Path, i: int, template: Path) -> str:
    """A template file named by an entry, relative to the registry file; it must exist and be Jinja."""
    from harness.audit.render import load_template_file

    full = template.expanduser()
    if not full.is_absolute():
        full = (registry.parent / full).resolve()
    if not full.is_file():
        raise InputError(str(registry), f"models[{i}].chat_template", f"{template}: no such template file")
    try:
        load_template_file(str(full))
    except InputError as exc:
        raise InputError(str(registry), f"models[{i}].chat_template", f"{template}: {exc.message}") from None
    return str(full)


def entry_for_local_dir(path: Path) -> ModelEntry:
    """An ad-hoc entry for ``--models ./some/dir``; its template policy is read from the directory."""
    path = Path(path).expanduser().resolve()
    problem = model_dir_problem(path)
    if problem is not None:
        raise InputError(str(path), "--models", problem.removeprefix(f"{path} "))
    has_template = _has_chat_template(path)
    name = re.sub(r"[^a-z0-9._-]", "-", path.name.lower()) or "model"
    return ModelEntry(
        name=name,
        source=str(path),
        revision=directory_revision(path),
        chat_template="model" if has_template else "none",
        notes=None if has_template else "no chat template in the directory: raw prompt text is used",
    )


def _has_chat_template(path: Path) -> bool:
    import json

    # lexists: a dangling link or a device named chat_template.jinja is a damaged template, not "no template":
    # the model then fails naming the file (harness.models.loading) instead of silently decoding raw text.
    if os.path.lexists(path / "chat_template.jinja") or os.path.lexists(path / "chat_template.json"):
        return True
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text(encoding="utf-8")).get("chat_template"))
        except (ValueError, OSError):
            return False
    return False


def resolve_models(spec: str | list[str], registry: Registry, *, allow_unpinned: bool = False,
                   trust_remote_code: bool = False) -> list[ModelEntry]:
    """Turn ``--models a,b,./dir`` into entries; unknown names and unpinned hub models are input errors."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    if not items or any(not s for s in items):
        raise InputError("--models", "", "expected a comma-separated list of registry names or model directories")
    by_name = registry.by_name()
    out: list[ModelEntry] = []
    for item in items:
        if item in by_name:
            entry = by_name[item]
        elif Path(item).expanduser().exists():
            entry = entry_for_local_dir(Path(item))
        else:
            known = ", ".join(sorted(by_name)[:8])
            raise InputError("--models", item, f"neither a registry name nor an existing directory (known: {known}, ...)")
        if not entry.is_local and entry.revision is None and not allow_unpinned:
            raise InputError(
                registry.path,
                f"{entry.name}.revision",
                "hub model is not pinned; run `stabprobe registry pin` where the hub is reachable, "
                "or pass --allow-unpinned (the revision actually loaded is recorded)",
            )
        if any(e.name == entry.name for e in out):
            raise InputError("--models", item, "named twice")
        if trust_remote_code and not entry.trust_remote_code:
            # Executing a model's own code is a decision recorded in the registry
            # (reviewable, versioned), never granted from a command line.
            raise InputError(
                registry.path if item in by_name else item, f"{entry.name}.trust_remote_code",
                "--trust-remote-code cannot enable custom code for an entry that does not opt in; "
                "set `trust_remote_code: true` in its registry entry after reviewing the code",
            )
        out.append(entry)
    return out
