"""What a ladder covers: pairs per rung, and why a rung or an edit is missing for a prompt."""

from __future__ import annotations

from collections import defaultdict

from harness.ladder.build import GENERATED_KINDS, KIND_RUNG
from harness.ladder.records import RUNGS, Ladder, RungCoverage, SkipGroup, rung_info

_CURATED_ONLY = "curated only, and no prompt has a curated {rung} entry"


def _selected(ladder: Ladder, rung: str) -> list[str]:
    kinds = [k for k, r in KIND_RUNG.items() if r == rung]  # EDIT_KINDS order, then the lexicon
    chosen = GENERATED_KINDS if ladder.edit_kinds is None else ladder.edit_kinds
    return [k for k in kinds if k in chosen]


def _skip_groups(skipped: list) -> tuple[SkipGroup, ...]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in skipped:
        groups[(s.edit_kind, s.reason)].append(s.prompt_id)
    return tuple(SkipGroup(kind, reason, tuple(ids)) for (kind, reason), ids in groups.items())


def _empty_reason(ladder: Ladder, rung: str, skipped: tuple[SkipGroup, ...]) -> str:
    if not ladder.prompts:
        return "no prompts"
    if ladder.pairs and all(p.origin == "imported" for p in ladder.pairs):
        return "the imported pair file has no pair of this rung"
    info = rung_info(rung)
    if info.curated_only:
        return _CURATED_ONLY.format(rung=rung)
    if info.has_edit_kinds and not _selected(ladder, rung) and not skipped:
        return "no edit kind of this rung is selected (edit_kinds)" + (
            f"; no prompt has a curated {rung}" if info.curated else "")
    reasons = sorted({g.reason for g in skipped})
    return "; ".join(reasons) or "no pair"


def rung_coverage(ladder: Ladder) -> tuple[RungCoverage, ...]:
    pairs: dict[str, int] = defaultdict(int)
    covered: dict[str, set[str]] = defaultdict(set)
    for p in ladder.pairs:
        pairs[p.rung] += 1
        covered[p.rung].add(p.prompt_id)
    by_rung: dict[str, list] = defaultdict(list)
    for s in ladder.skipped:  # one pass, not one per rung
        by_rung[s.rung].append(s)
    out = []
    for rung in RUNGS:
        skipped = _skip_groups(by_rung[rung])
        empty = "" if pairs[rung] else _empty_reason(ladder, rung, skipped)
        out.append(RungCoverage(rung, pairs[rung], len(covered[rung]), empty, skipped))
    return tuple(out)


def _ids(ids: tuple[str, ...], limit: int | None, n: int) -> str:
    if len(ids) == n:
        return "all prompts"
    if limit is None or len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f", ... ({len(ids) - limit} more)"


def coverage_lines(ladder: Ladder, id_limit: int | None = 12) -> list[str]:
    """The coverage as plain lines: one per rung, then one per group of skipped edits (ids cut at ``id_limit``)."""
    n = len(ladder.prompts)
    lines = []
    coverage = rung_coverage(ladder)
    for c in coverage:
        if c.pairs:
            lines.append(f"{c.rung}: {c.pairs} pairs, {c.prompts}/{n} prompts")
        else:
            lines.append(f"{c.rung}: EMPTY ({c.empty_reason})")
    skips = [(c.rung, g) for c in coverage for g in c.skipped]
    if skips:
        lines.append(f"edits not applicable ({len(ladder.skipped)}):")
        for rung, g in skips:
            lines.append(f"  {rung}/{g.edit_kind}: {len(g.prompt_ids)}/{n} prompts: {g.reason} ({_ids(g.prompt_ids, id_limit, n)})")
    return lines


def kind_count_lines(ladder: Ladder) -> list[str]:
    """Pairs and prompts per generated edit kind (``casing/lowercase_all: 48 pairs, 48/50 prompts``), selected kinds only."""
    n = len(ladder.prompts)
    chosen = set(GENERATED_KINDS if ladder.edit_kinds is None else ladder.edit_kinds)
    kinds = [(r, k) for k, r in KIND_RUNG.items()]
    # One pass over the pairs (a pass per kind was 43 passes: 16 s of a 10,000-prompt build).
    count: dict[tuple[str, str], int] = defaultdict(int)
    prompts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in ladder.pairs:
        if p.origin == "generated":
            count[(p.rung, p.edit_kind)] += 1
            prompts[(p.rung, p.edit_kind)].add(p.prompt_id)
    return [f"{rung}/{kind}: {count[(rung, kind)]} pairs, {len(prompts[(rung, kind)])}/{n} prompts"
            for rung, kind in kinds if kind in chosen]
