"""The schema of a gate file (pydantic, strict): thresholds, explicit pairs, neighbourhoods, the whole spec.

Reading the file, resolving models and building the ladder live in harness.gate.config;
a cross-field error raises FieldError so the one translator (harness.errors) names the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import field_validator, model_validator

from harness.errors import FieldError
from harness.ladder.answers import AnswerError, answer_spec
from harness.ladder.records import AnswerSpec
from harness.ladder.build import KIND_RUNG
from harness.ladder.records import CURATED_RUNGS, MECHANICAL_RUNGS, NOISE_FLOOR, RUNGS, SEEDED_RUNGS, rung_info
from harness.score.registry import gate_metrics

DEFAULT_LENGTHS = (64,)
DEFAULT_OUT = "runs"
JUNIT_NAME = "gate-junit.xml"
GENERATED_RUNGS = MECHANICAL_RUNGS + SEEDED_RUNGS + CURATED_RUNGS
"""Rungs a prompt neighbourhood may ask for; the noise floor (identical) is always added."""
EXPLICIT_PAIR_DEFAULT_RUNG = "paraphrase"
"""Rung label of an explicit pair that names none: a hand-written pair is most often a rewording."""


def _number(lo: float, hi: float | None):
    """A finite real number in [lo, hi]; bools and numeric strings are refused, not coerced."""
    expected = f"expected a number in [{lo:g}, {hi:g}]" if hi is not None else f"expected a number >= {lo:g}"

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(expected)
        if v < lo or (hi is not None and v > hi):
            raise ValueError(expected)
        return float(v)

    return BeforeValidator(check)


# A share or rate lies in [0, 1]; the registered metrics' bounds are in their GateUse.
Share = Annotated[float, _number(0.0, 1.0)]


def _check_id(v: str) -> str:
    # ids become the first part of pair ids ("<id>/<rung>/<kind>"), seeds, JUnit names and one-line reports
    if not v or "/" in v or any(ch.isspace() or not ch.isprintable() for ch in v):
        raise ValueError("must be non-empty and contain no '/', whitespace or control character")
    return v


def _nonempty_text(v: str) -> str:
    if not v.strip():
        raise ValueError("empty prompt")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _limit(key: str, v: Any, lo: float, hi: float | None) -> float:
    """A registered metric's limit, checked as ``_number`` checks the declared ones (errors name the key)."""
    try:
        return _number(lo, hi).func(v)
    except ValueError as exc:
        shown = repr(v)
        raise FieldError(key, f"{exc} (got {shown if len(shown) <= 60 else shown[:57] + '...'})") from None


class Thresholds(_Strict):
    """Upper limits one neighbourhood must stay under; each is optional, at least one is required.

    Besides the fields below, ``max_<check>`` for every metric the registry lets the gate use
    (harness.score.registry.gate_metrics: ``max_mean_emb_dist``, ``max_flip_rate``, ``max_answer_flip_rate``
    and any registered since): the mean of that pairs.parquet column over the perturbed pairs. They are
    validated against the registry when a gate file is read; :meth:`limit` returns one.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    max_early_divergence_share: Share | None = Field(
        None, description="Share of perturbed pairs whose outputs first differ within the first `early_step` tokens."
    )
    early_step: StrictInt | None = Field(None, description="k of max_early_divergence_share (1-based, <= the gated length).")
    max_accuracy_drop: Share | None = Field(
        None, description="Accuracy of the prompt minus accuracy of its perturbations, over the perturbed pairs (needs `answer`).")
    relative_to_noise_floor: StrictBool = Field(
        False, description="Compare (metric - the same metric on the identical pair) instead of the metric itself."
    )

    @field_validator("early_step")
    @classmethod
    def _k(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("expected a positive integer")
        return v

    @model_validator(mode="after")
    def _complete(self) -> "Thresholds":
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        registered = {f"max_{g.check}": g for _, g in gate_metrics()}
        for key in list(extra):
            g = registered.get(key)
            if g is None:
                raise FieldError(key, "unknown key")
            extra[key] = _limit(key, extra[key], g.lo, g.hi)  # the model is frozen once this validator returns
        if (self.max_early_divergence_share is None) != (self.early_step is None):
            raise FieldError("early_step" if self.early_step is None else "max_early_divergence_share",
                              "max_early_divergence_share and early_step go together: give both or neither")
        if not extra and self.max_early_divergence_share is None and self.max_accuracy_drop is None:
            names = [*registered, "max_early_divergence_share", "max_accuracy_drop"]
            raise ValueError(f"no threshold: give at least one of {', '.join(names)}")
        return self

    def limit(self, check: str) -> float | None:
        """The limit of a registered metric's gate check (GateUse.check), or None when the file gives none."""
        return (self.__pydantic_extra__ or {}).get(f"max_{check}")

    def answer_checks(self) -> list[str]:
        """The gate file keys given here whose check needs the neighbourhood's expected answer."""
        keys = [f"max_{g.check}" for _, g in gate_metrics() if g.needs_answer and self.limit(g.check) is not None]
        return keys + (["max_accuracy_drop"] if self.max_accuracy_drop is not None else [])


class ExplicitPair(_Strict):
    a: StrictStr
    b: StrictStr
    rung: StrictStr = Field(EXPLICIT_PAIR_DEFAULT_RUNG, description="Rung label; default paraphrase.")

    @field_validator("a", "b")
    @classmethod
    def _text(cls, v: str) -> str:
        return _nonempty_text(v)

    @field_validator("rung")
    @classmethod
    def _rung(cls, v: str) -> str:
        if v not in RUNGS:
            raise ValueError(f"unknown rung {v!r} (expected one of {', '.join(RUNGS)})")
        return v

    @model_validator(mode="after")
    def _identical_iff_equal(self) -> "ExplicitPair":
        # The audit drops a non-identical pair with equal inputs; an "identical" pair with different
        # inputs would poison the noise floor. Both are typos worth stopping for.
        if self.rung == NOISE_FLOOR and self.a != self.b:
            raise ValueError(f"rung {NOISE_FLOOR} needs a == b")
        if self.rung != NOISE_FLOOR and self.a == self.b:
            raise ValueError(f"a and b are the same text on rung {self.rung} (use rung: {NOISE_FLOOR})")
        return self


class Neighbourhood(_Strict):
    """A prompt and the perturbations around it (generated), or explicit pairs; and the limits they must meet."""

    id: StrictStr
    prompt: StrictStr | None = None
    rungs: tuple[StrictStr, ...] | None = Field(None, description="Rungs to generate around `prompt`.")
    edit_kinds: tuple[StrictStr, ...] | None = Field(None, description="Only these generated edit kinds (default: all of `rungs`).")
    curated: dict[StrictStr, tuple[StrictStr, ...]] | None = Field(None, description="Curated variants per curated rung.")
    pairs: tuple[ExplicitPair, ...] | None = None
    thresholds: Thresholds
    length: StrictInt | None = Field(None, description="Decoded length the thresholds use (default: the first of `lengths`).")
    answer: StrictStr | int | float | None = Field(None, description="Expected answer of the prompt (and of explicit pairs).")
    check: StrictStr | None = Field(None, description="exact, contains, regex, number or choice (default exact).")
    tolerance: float | int | None = Field(None, description="Tolerance of a `number` check.")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_id(v)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        return None if v is None else _nonempty_text(v)

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("empty list of rungs")
        for r in v:
            if r == NOISE_FLOOR:
                raise ValueError(f"{NOISE_FLOOR} is always included (it is the noise floor); do not list it")
            if r not in GENERATED_RUNGS:
                raise ValueError(f"unknown rung {r!r} (expected some of {', '.join(GENERATED_RUNGS)})")
        if len(set(v)) != len(v):
            raise ValueError("a rung is listed twice")
        return v

    @field_validator("edit_kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("empty list of edit kinds (omit the key for all kinds of the rungs)")
        for k in v:
            if k not in KIND_RUNG:
                raise ValueError(f"unknown edit kind {k!r} (expected one of {', '.join(KIND_RUNG)})")
        return v

    @field_validator("curated")
    @classmethod
    def _curated(cls, v: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        for rung, texts in (v or {}).items():
            if rung not in CURATED_RUNGS:
                raise ValueError(f"unknown curated rung {rung!r} (expected one of {', '.join(CURATED_RUNGS)})")
            if not texts:
                raise ValueError(f"{rung}: empty list")
            for t in texts:
                _nonempty_text(t)
        return v

    @field_validator("length")
    @classmethod
    def _length(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("expected a positive integer")
        return v

    @property
    def expected(self) -> AnswerSpec | None:
        return answer_spec(self.answer, self.check, self.tolerance)

    @model_validator(mode="after")
    def _answer(self) -> "Neighbourhood":
        try:
            expected = self.expected
        except AnswerError as exc:
            raise FieldError(exc.field, str(exc)) from None
        for name in self.thresholds.answer_checks():
            if expected is None:
                raise FieldError(f"thresholds.{name}", "needs the neighbourhood's expected `answer` (and `check`)")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> "Neighbourhood":
        if self.prompt is None and self.pairs is None:
            raise FieldError("prompt", "missing: give `prompt` (with `rungs`) or `pairs`")
        if self.prompt is not None and self.pairs is not None:
            raise FieldError("pairs", "give either `prompt` (with `rungs`) or `pairs`, not both")
        if self.pairs is not None:
            extra = [k for k in ("rungs", "edit_kinds", "curated") if getattr(self, k) is not None]
            if extra:
                raise FieldError(extra[0], "only applies to a `prompt` neighbourhood, not to `pairs`")
            if not self.pairs:
                raise FieldError("pairs", "empty list of pairs")
            if all(p.rung == NOISE_FLOOR for p in self.pairs):
                raise FieldError("pairs", f"only {NOISE_FLOOR} pairs: nothing is perturbed, so there is nothing to gate")
            return self
        if self.rungs is None:
            raise FieldError("rungs", "missing: a `prompt` neighbourhood needs `rungs` (e.g. [noop_format, punctuation])")
        for k in self.edit_kinds or ():
            if KIND_RUNG[k] not in self.rungs:
                raise FieldError("edit_kinds", f"edit kind {k!r} is on rung {KIND_RUNG[k]}, which is not in rungs")
        for rung in self.curated or {}:
            if rung not in self.rungs:
                raise FieldError("curated", f"curated {rung} given but {rung} is not in rungs")
        for rung in self.rungs:
            # Only edit kinds make pairs from a single prompt; the other rungs need written variants.
            if not rung_info(rung).has_edit_kinds and rung not in (self.curated or {}):
                raise FieldError("rungs", f"rung {rung} needs curated texts (curated: {{{rung}: [...]}})")
        return self


class GateSpec(_Strict):
    models: tuple[StrictStr, ...] = Field(..., description="Registry names or model directories.")
    registry: StrictStr | None = Field(None, description="Model registry YAML (default: the project's model_registry.yaml).")
    allow_unpinned: StrictBool = Field(False, description="Load hub models without a pinned revision.")
    lengths: tuple[StrictInt, ...] = Field(DEFAULT_LENGTHS, description="Decoded lengths to score (one decode at the longest).")
    out: StrictStr = Field(DEFAULT_OUT, description="Directory that receives the run directory.")
    junit: StrictStr | None = Field(None, description=f"JUnit XML path (default: <run dir>/{JUNIT_NAME}).")
    variants: tuple[StrictStr, ...] | None = Field(
        None, description="Variants to decode and check (e.g. [bf16, int4]; default: each model's registry variants).")
    allow_unmeasurable: tuple[StrictStr, ...] = Field(
        (), description=("Variants (``int8``) or model/variant names whose nondeterministic decode or unmeasurable noise "
                         "floor does not fail the gate (their checks still run); by default such a cell fails."))
    neighbourhoods: tuple[Neighbourhood, ...]

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or any(not x.strip() for x in v) or len(set(v)) != len(v)):
            raise ValueError("expected a non-empty list of distinct variant names (e.g. [bf16, int4])")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not m.strip() for m in v):
            raise ValueError("expected a non-empty list of registry names or model directories")
        return v

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(L < 1 for L in v):
            raise ValueError("expected a non-empty list of positive integers")
        if len(set(v)) != len(v):
            raise ValueError("a length is listed twice")
        return v

    @field_validator("neighbourhoods")
    @classmethod
    def _nonempty(cls, v: tuple[Neighbourhood, ...]) -> tuple[Neighbourhood, ...]:
        if not v:
            raise ValueError("expected at least one neighbourhood")
        return v
