"""A YAML loader that rejects duplicate keys and keeps dates as text.

PyYAML silently keeps the last of two equal keys; in a registry or ladder
that hides a typo, so duplicates are an input error with their line number.
YAML 1.1 also turns anything shaped like ``2026-01-01`` into a date object (and
raises a bare ValueError on ``2026-13-01``): a prompt or a ``template_date``
written that way stays the string it was written as, and the field's own
validation decides.

Input files are read with limits (a nightly job meets hostile and broken
files): a regular file only (a FIFO or character device would block or never
end), at most ``MAX_INPUT_BYTES``, nesting at most ``MAX_DEPTH`` deep, and YAML
aliases expanding to at most ``MAX_NODES`` values (anchors are shared by
reference when loaded, but every consumer walks the expanded tree: a few
hundred bytes of nested aliases is a billion values).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError

MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest input file read (ladders, prompts, registries, gate configs); the default ladder is 8 kB."""
MAX_DEPTH = 64
"""Deepest nesting of lists/mappings accepted; real inputs use 6 levels at most."""
MAX_NODES = 1_000_000
"""Most values a YAML document may expand to once its aliases are followed."""


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


def read_bytes_limited(path: Path, field: str = "file", limit: int | None = None) -> bytes:
    """A regular file's bytes, at most ``limit`` (default MAX_INPUT_BYTES); anything else is an InputError naming ``path``."""
    path = Path(path)
    limit = MAX_INPUT_BYTES if limit is None else limit
    try:
        st = os.stat(path)  # stat before open: opening a FIFO blocks
    except FileNotFoundError:
        raise InputError(str(path), field, "does not exist") from None
    except OSError as exc:
        raise InputError(str(path), field, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(str(path), field, "is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(str(path), field, "is not a regular file (a device, FIFO or socket is never read)")
    if st.st_size > limit:
        raise InputError(str(path), field, f"is {st.st_size} bytes, more than the {limit}-byte limit for an input file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)  # the size may change between stat and read
    except OSError as exc:
        raise InputError(str(path), field, f"cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise InputError(str(path), field, f"grew past the {limit}-byte limit for an input file while being read")
    return data


def read_text_strict(path: Path) -> str:
    """File contents as UTF-8, with missing files, non-regular files, oversize files and bad bytes as input errors."""
    data = read_bytes_limited(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), "encoding", f"not valid UTF-8 (byte offset {exc.start})") from None


def check_nesting(path: Path | str, value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a parsed value nested deeper than ``max_depth`` (iterative: no RecursionError on hostile input)."""
    stack = [(value, 1)]
    seen: set[int] = set()
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > max_depth:
                raise InputError(str(path), "(nesting)", f"nested deeper than {max_depth} levels")
            if id(v) in seen:
                continue
            seen.add(id(v))
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))


def _check_node_graph(path: Path, root: yaml.Node) -> None:
    """Depth and expanded size of a composed YAML document, computed without expanding it."""
    # Post-order over the node graph (aliases are the same node object reached twice);
    # each node's expanded size and depth are memoized by id, so the walk is linear in the file.
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for kv in node.value for n in kv]
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0) if children else 1
            if depth[key] > MAX_DEPTH + 1:
                raise InputError(str(path), "(nesting)", f"nested deeper than {MAX_DEPTH} levels")
            if size[key] > MAX_NODES:
                raise InputError(str(path), "(aliases)",
                                 f"expands to more than {MAX_NODES} values (YAML aliases nested into each other)")
            continue
        if key in size:
            continue
        if key in on_path:
            raise InputError(str(path), "(aliases)", "an alias refers to a node that contains it (recursive YAML)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
        if len(on_path) > MAX_DEPTH + 1:
            raise InputError(str(path), "(nesting)", f"nested deeper than {MAX_DEPTH} levels")


def load_yaml_strict(path: Path) -> Any:
    """Parse a YAML file; syntax errors, duplicate keys and unbounded nesting or aliases become InputError."""
    text = read_text_strict(path)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(Path(path), node)
        return loader.construct_document(node)
    except _DuplicateKey as dup:
        raise InputError(
            str(path), dup.key, f"duplicate key at line {dup.line} (first at line {dup.first_line})"
        ) from None
    except RecursionError:
        # PyYAML's composer recurses once per level: deep flow nesting ends here before any check can run.
        raise InputError(str(path), "(nesting)", f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(str(path), where, f"invalid YAML: {problem}") from None
    finally:
        loader.dispose()
