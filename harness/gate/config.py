"""The gate's configuration file (`stabprobe gate --config gate.yaml`): loading, models, ladder (schema: harness.gate.schema).

Everything a user can get wrong in the file is found here, before the
pipeline runs and before any run directory exists: every error is an
InputError naming the config file and the field
(``gate.yaml: neighbourhoods[1].thresholds.max_flip_rate: expected a number in [0, 1]``).

Paths inside the file (``registry``, ``out``, ``junit``, model directories) are
relative to the file's own directory, so a config means the same thing from
every working directory; command-line overrides are relative to the cwd.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from harness.core.hashing import sha256_text
from harness.core.yaml_strict import load_yaml_strict, read_text_strict
from harness.errors import InputError, pydantic_error_to_input_error
from harness.gate.schema import (  # noqa: F401 - JUNIT_NAME: imported from here by harness.gate.run
    JUNIT_NAME,
    GateSpec,
    Neighbourhood,
    Thresholds,
)
from harness.ladder.build import KIND_RUNG, build_pairs
from harness.ladder.records import NOISE_FLOOR, TASK_CHANGING_RUNGS
from harness.ladder.records import BasePrompt, Ladder, PromptPair, SkippedEdit
from harness.models.registry import DEFAULT_REGISTRY, ModelEntry, Registry, load_registry, resolve_models

GATE_LADDER = "gate"
"""Ladder name of every gate run: the first part of each generated edit's seed key."""


@dataclass(frozen=True)
class GateNeighbourhood:
    """A validated neighbourhood with its resolved length: what the evaluation needs."""

    id: str
    """The neighbourhood's id from the file (unique)."""
    length: int
    """Output length (tokens) its thresholds are checked at: its own, else the first of ``lengths``."""
    thresholds: Thresholds
    """Its upper limits, as validated by the schema."""
    pair_ids: tuple[str, ...]
    """Pairs of this neighbourhood in the ladder (identical ones included)."""


@dataclass(frozen=True)
class GateConfig:
    path: Path
    """The gate YAML file."""
    spec: GateSpec
    """The file as validated by the schema (harness.gate.schema.GateSpec)."""
    models: tuple[ModelEntry, ...]
    """The models, resolved from the registry (or directories relative to the file)."""
    ladder: Ladder
    """One ladder holding every neighbourhood's pairs."""
    neighbourhoods: tuple[GateNeighbourhood, ...]
    """The neighbourhoods in file order."""
    lengths: tuple[int, ...]
    """Sorted, as the pipeline scores them."""
    out: Path
    """Directory that receives the run directory (``--out``, else the file's ``out`` relative to it)."""
    junit: Path | None
    """None: ``<run dir>/gate-junit.xml``."""
    variants: tuple[str, ...] | None = None
    """The file's ``variants`` (None: each model's registry variants)."""
    allow_unmeasurable: tuple[str, ...] = ()
    """Variants or model/variant names allowed to be nondeterministic or unmeasurable (harness.summary.floor)."""
    threads: int | None = None
    """torch CPU threads of the gate's run (``--threads``; None: the project's policy, one on CPU:
    harness.core.threads), as for `stabprobe run`."""


def _relative_to(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def read_gate_spec(path: Path) -> GateSpec:
    raw = load_yaml_strict(path)
    if not isinstance(raw, dict):
        raise InputError(str(path), "(top level)", "expected a mapping with `models` and `neighbourhoods`")
    try:
        return GateSpec.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error_to_input_error(str(path), exc) from None


def _resolve_models(path: Path, spec: GateSpec) -> tuple[ModelEntry, ...]:
    base = path.parent
    registry_path = _relative_to(base, spec.registry) if spec.registry else DEFAULT_REGISTRY
    if spec.registry and not registry_path.is_file():
        raise InputError(str(path), "registry", f"{registry_path} does not exist")
    registry: Registry = load_registry(registry_path)
    names = registry.by_name()
    out: list[ModelEntry] = []
    for i, item in enumerate(spec.models):
        item = item.strip()
        target = item if item in names else str(_relative_to(base, item))
        if item not in names and not Path(target).exists():
            known = ", ".join(sorted(names)[:8])
            raise InputError(str(path), f"models[{i}]", f"{item!r} is neither a name in {registry_path} nor an existing directory "
                                                       f"(known: {known}, ...)")
        try:
            (entry,) = resolve_models([target], registry, allow_unpinned=spec.allow_unpinned)
        except InputError as exc:
            if exc.field.endswith(".revision"):
                raise InputError(str(path), f"models[{i}]", f"{item}: hub model is not pinned in {registry_path}; run "
                                 "`stabprobe registry pin` where the hub is reachable, or set allow_unpinned: true "
                                 "(the revision actually loaded is recorded)") from None
            raise InputError(str(path), f"models[{i}]", exc.one_line()) from None
        if any(e.name == entry.name for e in out):
            raise InputError(str(path), f"models[{i}]", f"model {entry.name!r} is listed twice")
        out.append(entry)
    return tuple(out)


def _prompt_pairs(path: Path, i: int, nb: Neighbourhood) -> tuple[list[PromptPair], list[SkippedEdit]]:
    """The generated neighbourhood of one prompt: identical + the requested rungs, through build_pairs."""
    assert nb.prompt is not None and nb.rungs is not None
    kinds = nb.edit_kinds if nb.edit_kinds is not None else tuple(k for k, r in KIND_RUNG.items() if r in nb.rungs)
    curated = {rung: [(t, "curated", "") for t in texts] for rung, texts in (nb.curated or {}).items()}
    # One prompt per call: edits are seeded by (ladder, neighbourhood id, rung, kind), so adding a
    # neighbourhood never changes another's pairs.
    pairs, skipped = build_pairs(GATE_LADDER, [BasePrompt(nb.id, nb.prompt, expected=nb.expected)], {nb.id: curated}, kinds)
    wanted = {NOISE_FLOOR, *nb.rungs}
    pairs = [p for p in pairs if p.rung in wanted]
    for rung in nb.rungs:
        if not any(p.rung == rung for p in pairs):
            why = "; ".join(f"{s.edit_kind}: {s.reason}" for s in skipped if s.rung == rung) or "no edit kind selected"
            raise InputError(str(path), f"neighbourhoods[{i}].rungs", f"no {rung} pair could be made from the prompt ({why})")
    return pairs, [s for s in skipped if s.rung in wanted]


def _explicit_pairs(nb: Neighbourhood) -> list[PromptPair]:
    """The user's pairs, plus an identical pair for each distinct first side that lacks one (the noise floor)."""
    assert nb.pairs is not None
    out: list[PromptPair] = []
    floors = {p.a for p in nb.pairs if p.rung == NOISE_FLOOR}
    firsts = list(dict.fromkeys(p.a for p in nb.pairs if p.rung != NOISE_FLOOR and p.a not in floors))
    for n, a in enumerate(firsts):
        out.append(PromptPair(f"{nb.id}/{NOISE_FLOOR}/floor-{n + 1}", nb.id, NOISE_FLOOR, NOISE_FLOOR, a, a, "generated",
                              "added by the gate: noise floor"))
    for j, p in enumerate(nb.pairs):
        out.append(PromptPair(f"{nb.id}/{p.rung}/pair-{j + 1}", nb.id, p.rung, "explicit", p.a, p.b, "imported"))  # type: ignore[arg-type]
    expected = nb.expected
    if expected is None:
        return out
    return [dataclasses.replace(p, answer_a=expected.answer, check=expected.check, tolerance=expected.tolerance,
                                answer_b=None if p.rung in TASK_CHANGING_RUNGS else expected.answer) for p in out]


def build_gate_ladder(path: Path, spec: GateSpec) -> tuple[Ladder, tuple[GateNeighbourhood, ...]]:
    """One ladder for all neighbourhoods; pair ids start with the neighbourhood id so results group back."""
    seen: dict[str, int] = {}
    pairs: list[PromptPair] = []
    skipped: list[SkippedEdit] = []
    prompts: list[BasePrompt] = []
    groups: list[GateNeighbourhood] = []
    lengths = spec.lengths
    for i, nb in enumerate(spec.neighbourhoods):
        if nb.id in seen:
            raise InputError(str(path), f"neighbourhoods[{i}].id", f"duplicate id {nb.id!r} (first at neighbourhoods[{seen[nb.id]}])")
        seen[nb.id] = i
        length = nb.length if nb.length is not None else lengths[0]
        if length not in lengths:
            raise InputError(str(path), f"neighbourhoods[{i}].length", f"{length} is not one of lengths {list(lengths)}")
        k = nb.thresholds.early_step
        if k is not None and k > length:
            # first_div is only measured within the first `length` tokens: a later k would count too few.
            raise InputError(str(path), f"neighbourhoods[{i}].thresholds.early_step",
                             f"{k} is beyond the gated length {length}")
        if nb.prompt is not None:
            mine, not_made = _prompt_pairs(path, i, nb)
            skipped += not_made  # recorded in the manifest: an edit that could not be made is never silent
        else:
            mine = _explicit_pairs(nb)
        pairs += mine
        prompts.append(BasePrompt(nb.id, nb.prompt if nb.prompt is not None else mine[0].prompt_a, topic=nb.id))
        groups.append(GateNeighbourhood(nb.id, length, nb.thresholds, tuple(p.pair_id for p in mine)))
    text = read_text_strict(path)
    ladder = Ladder(GATE_LADDER, str(path), sha256_text(text), tuple(prompts), tuple(pairs), tuple(skipped))
    return ladder, tuple(groups)


def load_gate_config(path: Path | str, *, out: Path | None = None, junit: Path | None = None,
                     threads: int | None = None) -> GateConfig:
    """The validated config, its models and its ladder; ``out``/``junit`` override the file's values."""
    path = Path(path)
    spec = read_gate_spec(path)
    ladder, groups = build_gate_ladder(path, spec)
    models = _resolve_models(path, spec)
    out_dir = Path(out) if out is not None else _relative_to(path.parent, spec.out)
    junit_path = Path(junit) if junit is not None else (_relative_to(path.parent, spec.junit) if spec.junit else None)
    if junit_path is not None and junit_path.is_dir():
        raise InputError(str(path) if junit is None else "--junit", "junit", f"{junit_path} is a directory, expected a file path")
    return GateConfig(path, spec, models, ladder, groups, tuple(sorted(spec.lengths)), out_dir, junit_path,
                      spec.variants, spec.allow_unmeasurable, threads)
