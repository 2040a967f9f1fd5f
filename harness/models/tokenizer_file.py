"""What is wrong with a model directory's ``tokenizer.json``, named by file and field (issue 34).

transformers and tokenizers report a damaged file as a bare ``JSONDecodeError``, ``invalid type ... at line 1
column 4462917`` or an ``AttributeError``: no file, no field. When a local tokenizer fails to load, its
``tokenizer.json`` is diagnosed here and the error names what to fix; a file with nothing wrong leaves the
original error as it was (the fault is elsewhere).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_SECTIONS = ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding")
"""Top-level sections that are an object or null."""
_MODEL_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "BPE": (("vocab", dict), ("merges", list)), "WordPiece": (("vocab", dict),), "WordLevel": (("vocab", dict),),
    "Unigram": (("vocab", list),)}
"""The model section's fields whose type a damaged file gets wrong most visibly, by model type."""
_NAMES = {dict: "an object", list: "a list"}
_KEY = re.compile(r'[{,]\s*"((?:[^"\\]|\\.){1,80})"\s*:')


def tokenizer_json_problem(path: Path) -> str | None:
    """``FIELD: what is wrong`` for a damaged ``tokenizer.json``; None when it parses and loads."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"(file): not UTF-8 (byte {exc.start})"
    except OSError as exc:
        return f"(file): cannot be read ({exc.strerror})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        return f"(file): not valid JSON, truncated or damaged: {getattr(exc, 'msg', exc)}{where}"
    problem = _shape_problem(data)
    if problem is not None:
        return problem
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for every schema error
        msg = " ".join(str(exc).split())
        m = re.search(r" at line (\d+) column (\d+)$", msg)
        if m is None:
            return f"(file): {msg}"
        return f"{_field_before(text, data, int(m.group(1)), int(m.group(2)))}: {msg[: m.start()]} " \
            f"(line {m.group(1)}, column {m.group(2)})"
    return None


def _field_before(text: str, data: dict, line: int, column: int) -> str:
    """The section key last opened before tokenizers' error position (``model.vocab``), else ``(file)``.

    A key is a quoted string after ``{`` or ``,`` and before ``:``; a string inside a list can look like one,
    so only the names of the file's own top-level and second-level keys count.
    """
    known: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            known.update({k: f"{key}.{k}" for k in value if isinstance(k, str)})
    known.update({k: k for k in data})
    for key in reversed(_KEY.findall(text[: _offset(text, line, column)])):
        if key in known:
            return known[key]
    return "(file)"


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"(top level): expected an object, got {type(data).__name__}"
    model = data.get("model")
    if not isinstance(model, dict):
        return "model: missing (the tokenizer's vocabulary and type live there)" if model is None else \
            f"model: expected an object, got {type(model).__name__}"
    kind = model.get("type", "BPE")
    if not isinstance(kind, str):
        return f"model.type: expected a string, got {type(kind).__name__}"
    for key, want in _MODEL_FIELDS.get(kind, ()):
        if key in model and not isinstance(model[key], want):
            return f"model.{key}: expected {_NAMES[want]} for a {kind} model, got {type(model[key]).__name__}"
    for key in _SECTIONS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key}: expected an object or null, got {type(data[key]).__name__}"
    added = data.get("added_tokens", [])
    if not isinstance(added, list):
        return f"added_tokens: expected a list, got {type(added).__name__}"
    for i, tok in enumerate(added):
        if not isinstance(tok, dict) or not isinstance(tok.get("id"), int) or not isinstance(tok.get("content"), str):
            return f"added_tokens[{i}]: expected an object with an integer id and a string content"
    return None


def _offset(text: str, line: int, column: int) -> int:
    at = 0
    for _ in range(line - 1):
        at = text.index("\n", at) + 1
    return at + column - 1
