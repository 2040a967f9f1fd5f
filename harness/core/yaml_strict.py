"""A YAML loader that rejects duplicate keys and keeps dates as text.

PyYAML silently keeps the last of two equal keys; in a registry or ladder
that hides a typo, so duplicates are an input error with their line number.
YAML 1.1 also turns anything shaped like ``2026-01-01`` into a date object (and
raises a bare ValueError on ``2026-13-01``): a prompt or a ``template_date``
written that way stays the string it was written as, and the field's own
validation decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(str(key), key_node.start_mark.line + 1, seen[key])
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def read_text_strict(path: Path) -> str:
    """File contents as UTF-8, with missing files and bad bytes as input errors."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "file", "does not exist") from None
    except IsADirectoryError:
        raise InputError(str(path), "file", "is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(str(path), "file", f"cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), "encoding", f"not valid UTF-8 (byte offset {exc.start})") from None


def load_yaml_strict(path: Path) -> Any:
    """Parse a YAML file; syntax errors and duplicate keys become InputError."""
    text = read_text_strict(path)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as dup:
        raise InputError(
            str(path), dup.key, f"duplicate key at line {dup.line} (first at line {dup.first_line})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(str(path), where, f"invalid YAML: {problem}") from None
