"""Writing a prompt set as a ladder YAML file that loads back to the same pairs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError
from harness.ladder.coverage import coverage_lines, kind_count_lines
from harness.ladder.records import CURATED_RUNGS, Ladder, PromptSet, Variant
from harness.core.rundir import atomic_write_text


class _Quoted(str):
    """A prompt text: always double-quoted, so edge whitespace is visible and survives the round trip."""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML may write a plain scalar holding a character its reader takes for
    # a line break (U+0085); anything beyond printable ASCII is double-quoted.
    if all(" " <= ch <= "~" for ch in value):
        return dumper.represent_str(value)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"'))


def _variant(v: Variant) -> Any:
    if v.edit_kind == "curated" and not v.note and v.answer is None:
        return _Quoted(v.text)
    out: dict[str, Any] = {"text": _Quoted(v.text), "edit_kind": v.edit_kind}
    if v.note:
        out["note"] = v.note
    if v.answer is not None:
        out["answer"] = v.answer
    return out


def _document(prompt_set: PromptSet) -> dict[str, Any]:
    doc: dict[str, Any] = {"ladder": prompt_set.name}
    if prompt_set.description:
        doc["description"] = prompt_set.description
    if prompt_set.edit_kinds is not None:
        doc["edit_kinds"] = list(prompt_set.edit_kinds)
    if prompt_set.pairs_per_kind != 1:
        doc["pairs_per_kind"] = prompt_set.pairs_per_kind
    prompts = []
    for p in prompt_set.prompts:
        entry: dict[str, Any] = {"id": p.id, "topic": p.topic}
        if p.in_domain:
            entry["in_domain"] = True
        entry["text"] = _Quoted(p.text)
        if p.expected is not None:
            entry["answer"] = p.expected.answer
            entry["check"] = p.expected.check
            if p.expected.tolerance is not None:
                entry["tolerance"] = p.expected.tolerance
        rungs = prompt_set.curated.get(p.id, {})
        curated = {r: [_variant(v) for v in rungs[r]] for r in CURATED_RUNGS if rungs.get(r)}
        if curated:
            entry["curated"] = curated
        prompts.append(entry)
    doc["prompts"] = prompts
    return doc


def _printable(text: str) -> str:
    # A YAML reader rejects control characters even inside a comment.
    return "".join(ch if ch == " " or (ch.isprintable() and ch != "\ufeff") else f"<U+{ord(ch):04X}>" for ch in text)


def _comment(lines: list[str]) -> str:
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip(" ")))
        flat = _printable(" ".join(line.split()))  # a path, id or reason must not break out of its comment line
        wrapped = textwrap.wrap(flat, width=94 - len(indent), break_long_words=False, break_on_hyphens=False) or [""]
        out.append(f"# {indent}{wrapped[0]}".rstrip())
        out += [f"# {indent}    {w}" for w in wrapped[1:]]
    return "\n".join(out) + "\n"


def ladder_yaml(prompt_set: PromptSet, ladder: Ladder) -> str:
    """The ladder file text: a header with per-rung counts and the reasons for missing pairs, then the prompts."""
    header = [
        f"Ladder {prompt_set.name!r}, written by `stabprobe ladder build` from {prompt_set.source}",
        f"(sha256 {prompt_set.source_sha256}).",
        "Seeded rungs, the lexicon synonym and the paired positive control are generated from",
        "each prompt when the ladder is loaded, seeded from (ladder, prompt id, rung, edit kind[, draw]);",
        "a prompt without a topic of its own is its own topic.",
        "",
        f"{len(ladder.prompts)} prompts, {len(ladder.pairs)} pairs; by rung:",
        *("  " + line for line in coverage_lines(ladder, id_limit=None)),
        "by edit kind:",
        *("  " + line for line in kind_count_lines(ladder)),
    ]
    body = yaml.dump(_document(prompt_set), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=10**6)
    return _comment(header) + body


def write_ladder(prompt_set: PromptSet, ladder: Ladder, out: Path | str) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(str(out), "--out", "a ladder file must end in .yaml or .yml")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, ladder_yaml(prompt_set, ladder))
    except OSError as exc:
        raise InputError(str(out), "--out", f"cannot write the ladder ({exc.strerror})") from None
    return out
