"""Reading ladders: the project's YAML format and the published pair JSON format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from harness.errors import InputError, pydantic_error_to_input_error
from harness.core.hashing import sha256_text
from harness.ladder.answers import AnswerError, answer_spec
from harness.ladder.records import AnswerSpec
from harness.ladder.options import option_labels
from harness.ladder.build import MAX_PAIRS_PER_KIND, build_ladder, resolve_kinds
from harness.ladder.records import TASK_CHANGING_RUNGS, CURATED_RUNGS, BasePrompt, Ladder, PromptPair, PromptSet, Variant
from harness.core.yaml_strict import MAX_DEPTH, check_nesting, load_yaml_strict, read_text_strict
from harness.core.resources import data_path

DEFAULT_LADDER = data_path("ladders", "default.yaml")

# Published pair files name the rungs slightly differently.
CATEGORY_TO_RUNG = {
    "control_identical": "identical",
    "noop_format": "noop_format",
    "punctuation": "punctuation",
    "structural": "structural",
    "synonym": "synonym",
    "paraphrase": "paraphrase",
    "semantic_small": "semantic_small",
    "positive_control": "positive_control",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CuratedVariant(_Strict):
    text: str
    edit_kind: str = "curated"
    note: str = ""
    answer: str | int | float | None = None
    """The variant's own expected answer (checked like its base prompt's)."""

    @field_validator("text")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty prompt")
        check_prompt_length(v)
        return v


# One list of variants per curated rung of the rung table (harness.ladder.records.RUNG_TABLE).
CuratedSet = create_model(
    "CuratedSet", __base__=_Strict,
    **{rung: (list[str | CuratedVariant], Field(default_factory=list)) for rung in CURATED_RUNGS},  # type: ignore[call-overload]
)


MAX_PROMPT_CHARS = 100_000
"""Longest prompt a ladder takes (characters); a longer one is refused with one line naming it."""


def check_prompt_length(text: str) -> None:
    """Every edit reads the whole prompt, so a ladder's cost grows with its length (a 1 MB prompt took 5 s of CPU
    to build, and no model's context holds it): a prompt over MAX_PROMPT_CHARS is refused."""
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}")


class PromptSpec(_Strict):
    id: str
    text: str
    topic: str = "general"
    in_domain: bool = False
    answer: Any = None
    """Expected answer; checked at load by harness.ladder.answers.answer_spec (with check and tolerance)."""
    check: Any = None
    tolerance: Any = None
    curated: CuratedSet = Field(default_factory=CuratedSet)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        # ids end up in pair ids ("<id>/<rung>/<kind>"), seeds and one-line reports
        if not v or "/" in v or any(ch.isspace() or not ch.isprintable() for ch in v):
            raise ValueError("must be non-empty and contain no '/', whitespace or control character")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty prompt")
        check_prompt_length(v)
        return v


class LadderSpec(_Strict):
    ladder: str
    description: str = ""
    edit_kinds: list[str] | None = None
    """Kind names, or rung names standing for all their generated kinds."""
    pairs_per_kind: int = Field(1, ge=1, le=MAX_PAIRS_PER_KIND)
    prompts: list[PromptSpec]

    @field_validator("edit_kinds")
    @classmethod
    def _kinds(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(resolve_kinds(v))


def load_ladder(path: Path | str) -> Ladder:
    """A ladder from ``.yaml``/``.yml`` (project format) or ``.json`` (published pairs)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return import_pairs_json(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_ladder_yaml(path)
    raise InputError(str(path), "file", "expected a .yaml/.yml ladder or a .json pair file")


def load_ladder_yaml(path: Path) -> Ladder:
    return build_ladder(read_ladder_yaml(path))


def read_ladder_yaml(path: Path) -> PromptSet:
    """The prompt set of a project-format ladder file, validated."""
    raw = load_yaml_strict(path)
    try:
        spec = LadderSpec.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error_to_input_error(str(path), exc) from None
    if not spec.prompts:
        raise InputError(str(path), "prompts", "no prompts")
    return prompt_set_from_specs(
        spec.ladder, spec.prompts, source=str(path), source_sha256=sha256_text(read_text_strict(path)),
        where="prompts", edit_kinds=tuple(spec.edit_kinds) if spec.edit_kinds else None, description=spec.description,
        pairs_per_kind=spec.pairs_per_kind,
    )


def prompt_set_from_specs(
    name: str,
    specs: list[PromptSpec],
    *,
    source: str,
    source_sha256: str,
    where: str = "",
    edit_kinds: tuple[str, ...] | None = None,
    description: str = "",
    pairs_per_kind: int = 1,
) -> PromptSet:
    """Validated prompt specs -> PromptSet; ``where`` prefixes the field of an error (``prompts[3].id``)."""
    seen: dict[str, int] = {}
    for i, p in enumerate(specs):
        if p.id in seen:
            raise InputError(source, f"{where}[{i}].id", f"duplicate id {p.id!r} (first at {where}[{seen[p.id]}])")
        seen[p.id] = i
    texts: dict[str, int] = {}
    for i, p in enumerate(specs):
        if p.text in texts:
            # Two equal prompts would double every pair they make (narrower CIs than the data supports).
            raise InputError(source, f"{where}[{i}].text",
                             f"duplicate prompt: same text as {where}[{texts[p.text]}] (id {specs[texts[p.text]].id!r}); "
                             "remove one")
        texts[p.text] = i
    expected = [_expected(source, f"{where}[{i}]", p) for i, p in enumerate(specs)]
    prompts = tuple(BasePrompt(p.id, p.text, p.topic, p.in_domain, e) for p, e in zip(specs, expected))
    curated = {
        p.id: {
            rung: tuple(Variant(v) if isinstance(v, str) else
                        Variant(v.text, v.edit_kind, v.note, _variant_answer(source, f"{where}[{i}].curated.{rung}[{j}]", e, v))
                        for j, v in enumerate(getattr(p.curated, rung)))
            for rung in CURATED_RUNGS
            if getattr(p.curated, rung)
        }
        for i, (p, e) in enumerate(zip(specs, expected))
    }
    for i, p in enumerate(specs):
        for rung in CURATED_RUNGS:
            for j, v in enumerate(getattr(p.curated, rung)):
                if isinstance(v, str) and not v.strip():
                    raise InputError(source, f"{where}[{i}].curated.{rung}[{j}]", "empty prompt")
    return PromptSet(name, source, source_sha256, prompts, curated, edit_kinds, description, pairs_per_kind)


def _expected(source: str, where: str, spec: Any) -> AnswerSpec | None:
    """A prompt's answer keys validated (``answer``, ``check``, ``tolerance``); InputError naming the key."""
    try:
        expected = answer_spec(spec.answer, spec.check, spec.tolerance)
    except AnswerError as exc:
        raise InputError(source, f"{where}.{exc.field}", str(exc)) from None
    if expected is not None and expected.check == "choice":
        labels = option_labels(spec.text)
        if labels and expected.answer not in labels:
            raise InputError(source, f"{where}.answer",
                             f"choice {expected.answer!r} is not one of the prompt's option labels {', '.join(labels)}")
    return expected


def _variant_answer(source: str, where: str, expected: AnswerSpec | None, v: CuratedVariant) -> str | None:
    if v.answer is None:
        return None
    if expected is None:
        raise InputError(source, f"{where}.answer", "the base prompt has no `answer` (and so no check) to compare it with")
    try:
        return answer_spec(v.answer, expected.check, expected.tolerance).answer  # type: ignore[union-attr]
    except AnswerError as exc:
        raise InputError(source, f"{where}.answer", str(exc)) from None


def _imported_answers(path: Path, where: str, item: dict, pair: PromptPair) -> PromptPair:
    """A pair file's optional ``answer`` (both sides; side b's own as ``answer_b``), ``check`` and ``tolerance``."""
    try:
        expected = answer_spec(item.get("answer"), item.get("check"), item.get("tolerance"))
    except AnswerError as exc:
        raise InputError(str(path), f"{where}.{exc.field}", str(exc)) from None
    if expected is None:
        if "answer_b" in item:
            raise InputError(str(path), f"{where}.answer_b", "given without an `answer` (and so without a check)")
        return pair
    answer_b = expected.answer if pair.rung not in TASK_CHANGING_RUNGS else None
    if item.get("answer_b") is not None:
        try:
            answer_b = answer_spec(item["answer_b"], expected.check, expected.tolerance).answer  # type: ignore[union-attr]
        except AnswerError as exc:
            raise InputError(str(path), f"{where}.answer_b", str(exc)) from None
    return dataclasses.replace(pair, answer_a=expected.answer, answer_b=answer_b, check=expected.check,
                               tolerance=expected.tolerance)


def _reject_duplicate_keys(path: Path):
    def hook(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for k, v in items:
            if k in out:
                raise InputError(str(path), k, "duplicate key")
            out[k] = v
        return out

    return hook


def parse_json_strict(path: Path, text: str) -> Any:
    """JSON text of ``path`` parsed; syntax errors and duplicate keys become InputError."""
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicate_keys(path))
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    except RecursionError:  # the json module recurses once per level
        raise InputError(str(path), "(nesting)", f"nested deeper than {MAX_DEPTH} levels") from None
    check_nesting(path, value)
    return value


def import_pairs_json(path: Path) -> Ladder:
    """Import a published pair file as-is: ``[{id, category, prompt_a, prompt_b, notes?}]``."""
    text = read_text_strict(path)
    raw = parse_json_strict(path, text)
    if not isinstance(raw, list) or not raw:
        raise InputError(str(path), "(top level)", "expected a non-empty JSON list of pairs")
    pairs: list[PromptPair] = []
    seen: set[str] = set()
    seen_pairs: dict[tuple[str, str, str], str] = {}
    allowed = {"id", "category", "prompt_a", "prompt_b", "notes", "answer", "answer_b", "check", "tolerance"}
    for i, item in enumerate(raw):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise InputError(str(path), where, "expected an object")
        for key in item:
            if key not in allowed:
                raise InputError(str(path), f"{where}.{key}", "unknown key")
        for key in ("id", "category", "prompt_a", "prompt_b"):
            if key not in item:
                raise InputError(str(path), f"{where}.{key}", "missing")
            if not isinstance(item[key], str):
                raise InputError(str(path), f"{where}.{key}", "expected a string")
        if item["category"] not in CATEGORY_TO_RUNG:
            raise InputError(
                str(path), f"{where}.category", f"unknown category {item['category']!r} (expected one of {', '.join(CATEGORY_TO_RUNG)})"
            )
        for key in ("prompt_a", "prompt_b"):
            if not item[key].strip():
                raise InputError(str(path), f"{where}.{key}", "empty prompt")
        pid = item["id"]
        if not pid.strip():
            raise InputError(str(path), f"{where}.id", "empty id")
        if pid in seen:
            raise InputError(str(path), f"{where}.id", f"duplicate id {pid!r}")
        seen.add(pid)
        same = (item["category"], item["prompt_a"], item["prompt_b"])
        if same in seen_pairs:
            raise InputError(str(path), f"{where}.id",
                             f"duplicate pair: same category and prompts as {seen_pairs[same]!r}; remove one")
        seen_pairs[same] = pid
        rung = CATEGORY_TO_RUNG[item["category"]]
        pair = PromptPair(pid, pid, rung, item["category"], item["prompt_a"], item["prompt_b"], "imported", str(item.get("notes") or ""))
        pairs.append(_imported_answers(path, where, item, pair))
    prompts = tuple(BasePrompt(p.pair_id, p.prompt_a) for p in pairs)
    return Ladder(path.stem, str(path), sha256_text(text), prompts, tuple(pairs), ())
