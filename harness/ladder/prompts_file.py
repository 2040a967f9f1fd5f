"""Reading a user's prompts file: the input of `stabprobe ladder build` and `run --prompts`.

Formats, chosen by the file's suffix:

- ``.txt``: one prompt per line, kept byte for byte (trailing spaces included:
  whitespace is what this harness measures); blank lines are skipped and
  counted; ids are ``p001``, ``p002``, ... in order.
- ``.json`` / ``.yaml`` / ``.yml``: a list whose items are strings (ids as for
  ``.txt``, by position) or objects ``{id, text, topic?, in_domain?, curated?}``
  (``curated`` as in a ladder file).

A prompt without a topic is its own topic, so the positive control may pair it
with any other prompt of the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import InputError, pydantic_error_to_input_error
from harness.core.hashing import sha256_text
from harness.ladder.build import build_ladder
from harness.ladder.load import PromptSpec, check_prompt_length, parse_json_strict, prompt_set_from_specs
from harness.ladder.records import Ladder, PromptSet, PromptsFile
from harness.core.yaml_strict import load_yaml_strict, read_text_strict

SUFFIXES = (".txt", ".json", ".yaml", ".yml")


def prompt_ids(n: int) -> list[str]:
    """``p001``... wide enough that ids sort in file order."""
    width = max(3, len(str(n)))
    return [f"p{i:0{width}d}" for i in range(1, n + 1)]


def read_prompts_file(path: Path | str, name: str | None = None) -> PromptsFile:
    """Parse and validate a prompts file; ``name`` (default: the file's stem) seeds every edit."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(str(path), "file", f"expected a prompts file ending in {', '.join(SUFFIXES)}")
    text = read_text_strict(path)
    ladder_name = name if name is not None else path.stem
    if not ladder_name.strip():
        raise InputError(str(path), "--name", "empty ladder name")
    body = text.removeprefix("\ufeff")  # a BOM is an editor's artefact, not part of the first prompt
    if suffix == ".txt":
        specs, blank = _txt_specs(body, path), _blank_lines(body)
    else:
        raw = parse_json_strict(path, body) if suffix == ".json" else load_yaml_strict(path)
        specs, blank = _structured_specs(path, raw), 0
    if not specs:
        raise InputError(str(path), "prompts", f"no prompts ({blank} blank lines)" if suffix == ".txt" else "no prompts")
    specs, duplicates = _drop_duplicates(specs)
    prompt_set = prompt_set_from_specs(
        ladder_name, specs, source=str(path), source_sha256=sha256_text(text),
        description=f"Built from {path.name} ({len(specs)} prompts).",
    )
    return PromptsFile(prompt_set, blank, duplicates)


def _drop_duplicates(specs: list[PromptSpec]) -> tuple[list[PromptSpec], tuple[tuple[str, str], ...]]:
    """Keep the first of equal texts (byte for byte: whitespace differences are distinct prompts); ids unchanged."""
    first: dict[str, str] = {}
    kept, dropped = [], []
    for sp in specs:
        if sp.text in first:
            dropped.append((sp.id, first[sp.text]))
            continue
        first[sp.text] = sp.id
        kept.append(sp)
    return kept, tuple(dropped)


def ladder_from_prompts(path: Path | str, name: str | None = None, note=None) -> Ladder:
    """The full ladder of a prompts file (what `run --prompts FILE` uses); ``note`` receives the duplicates line."""
    read = read_prompts_file(path, name)
    if note is not None and read.duplicates_note():
        note(read.duplicates_note())
    return build_ladder(read.prompt_set)


def _lines(body: str) -> list[str]:
    # Only the line terminator is dropped; "\r" too, for files written on Windows.
    return [line.removesuffix("\r") for line in body.split("\n")]


def _blank_lines(body: str) -> int:
    lines = _lines(body)
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not open a blank one
    return sum(1 for line in lines if not line.strip())


# Lines that can only continue the prompt above them: two answer options in a row ("A. ...", then "B. ...";
# one line starting "A. Lincoln" is a prompt) or an options header alone on its line. In a .txt (one prompt per
# line) they mean the file holds multi-line prompts, and reading it line by line would silently turn one
# multiple-choice question into five prompts.
_OPTION = re.compile(r"^\s*\(?([A-Ha-h])[.)]\s*\S")
_HEADER = re.compile(r"^\s*(?:Options|Choices|Answer choices)\s*:\s*$", re.IGNORECASE)


def _continuation(lines: list[str]) -> int | None:
    """1-based line number of the first line that continues a multi-line prompt, None when there is none."""
    for n, line in enumerate(lines):
        if _HEADER.match(line):
            return n + 1
        m, nxt = _OPTION.match(line), _OPTION.match(lines[n + 1]) if n + 1 < len(lines) else None
        if m and nxt and ord(nxt.group(1).lower()) == ord(m.group(1).lower()) + 1:
            return n + 1
    return None


def _txt_specs(body: str, path: Path | None = None) -> list[PromptSpec]:
    lines = _lines(body)
    n = _continuation(lines)
    if n is not None:
        raise InputError(str(path or "prompts"), f"line {n}",
                         f"{lines[n - 1].strip()[:40]!r} continues a prompt over several lines (answer options), but a "
                         ".txt holds one prompt per line; put multi-line prompts in a .json or .yaml list")
    texts = [line for line in lines if line.strip()]
    for k, t in enumerate(texts):
        try:
            check_prompt_length(t)
        except ValueError as exc:
            raise InputError(str(path or "prompts"), f"prompt {k + 1}", str(exc)) from None
    return [PromptSpec(id=pid, text=t, topic=pid) for pid, t in zip(prompt_ids(len(texts)), texts)]


def _structured_specs(path: Path, raw: Any) -> list[PromptSpec]:
    if isinstance(raw, dict) and "prompts" in raw and "ladder" in raw:
        raise InputError(str(path), "(top level)", "this is a ladder file, not a prompts file: pass it with --ladder")
    if not isinstance(raw, list):
        raise InputError(str(path), "(top level)", "expected a list of prompts (strings or {id, text, topic?} objects)")
    ids = prompt_ids(len(raw))
    specs = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"id": ids[i], "text": item, "topic": ids[i]}
        elif isinstance(item, dict):
            if "id" not in item:
                raise InputError(str(path), f"[{i}].id", "missing (an object needs an id; a plain string gets one)")
            if "topic" not in item and isinstance(item["id"], str):
                item = {**item, "topic": item["id"]}
        else:
            raise InputError(str(path), f"[{i}]", f"expected a string or an object with id and text, got {type(item).__name__}")
        try:
            specs.append(PromptSpec.model_validate(item))
        except ValidationError as exc:
            raise pydantic_error_to_input_error(str(path), exc, prefix=f"[{i}]") from None
    return specs
