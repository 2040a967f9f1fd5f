"""`stabprobe registry pin`: write resolved revisions back into the registry file.

Local directories get their content hash (works offline). Hub ids are resolved
to the current commit of their default branch, which needs the hub; here that
fails loudly instead of leaving an entry silently unpinned.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from harness.errors import EnvironmentProblem, InputError
from harness.core.hashing import directory_revision
from harness.models.gguf import is_gguf_source
from harness.models.registry import load_registry, model_dir_problem
from harness.core.yaml_strict import read_text_strict


def resolve_hub_revision(source: str) -> str:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(source).sha
    except Exception as exc:  # noqa: BLE001 - every failure here means "cannot resolve"
        raise EnvironmentProblem(f"cannot resolve the hub revision of {source}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not sha or not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise EnvironmentProblem(f"the hub returned no commit for {source}")
    return sha


def set_revision(text: str, name: str, revision: str) -> str:
    """Replace (or add) the ``revision:`` line of one entry, keeping comments and layout."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if re.match(rf"^\s*-\s+name:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$", l)), None)
    if start is None:
        raise InputError("registry", name, "entry not found in the file text")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    end = start + 1
    while end < len(lines) and not re.match(r"^\s*-\s+name:", lines[end]) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) >= indent or lines[end].lstrip().startswith("#")
    ):
        end += 1
    for i in range(start + 1, end):
        if re.match(rf"^\s{{{indent}}}revision:", lines[i]):
            comment = re.search(r"\s+#.*$", lines[i].rstrip("\n"))
            lines[i] = " " * indent + f"revision: {_quote(revision)}" + (comment.group(0) if comment else "") + "\n"
            return "".join(lines)
    lines.insert(start + 1, " " * indent + f"revision: {_quote(revision)}\n")
    return "".join(lines)


def _quote(rev: str) -> str:
    return f'"{rev}"'


def pin_registry(path: Path, names: Iterable[str] | None = None, local_only: bool = False) -> list[str]:
    reg = load_registry(path)
    wanted = set(names) if names else None
    if wanted:
        unknown = wanted - {m.name for m in reg.models}
        if unknown:
            raise InputError(str(path), "--names", f"unknown entries: {', '.join(sorted(unknown))}")
    text = read_text_strict(path)
    report, problems = [], []
    for m in reg.models:
        if wanted and m.name not in wanted:
            continue
        if is_gguf_source(m.source):  # pinned by the file's own sha256, written by hand: nothing to resolve
            report.append(f"unchanged {m.name}: {m.revision} (GGUF file pin)")
            continue
        if m.is_local:
            problem = model_dir_problem(Path(m.source))
            if problem is not None:
                raise InputError(str(path), f"{m.name}.source", problem)
            rev = directory_revision(Path(m.source))
        elif local_only:
            continue
        else:
            try:
                rev = resolve_hub_revision(m.source)
            except EnvironmentProblem as exc:
                problems.append(str(exc))
                continue
        if rev != m.revision:
            text = set_revision(text, m.name, rev)
            report.append(f"pinned {m.name}: {rev}")
        else:
            report.append(f"unchanged {m.name}: {rev}")
    from harness.core.rundir import atomic_write_text

    atomic_write_text(Path(path), text)
    load_registry(path)  # the rewritten file must still validate
    if problems:
        report += [f"NOT PINNED: {p}" for p in problems]
        raise EnvironmentProblem(f"{len(problems)} hub entries could not be pinned (first: {problems[0]}); "
                                 f"{len(report) - len(problems)} local entries written")
    return report
