"""Base prompts + curated variants -> every rung's pairs."""

from __future__ import annotations

import random

from harness.ladder.edits import EDIT_KINDS, NotApplicable, apply_edit, seed_for
from harness.ladder.records import CURATED_RUNGS, BasePrompt, PromptPair, SkippedEdit


def build_pairs(
    ladder: str,
    prompts: list[BasePrompt],
    curated: dict[str, dict[str, list[tuple[str, str, str]]]],
    edit_kinds: tuple[str, ...] | None = None,
) -> tuple[list[PromptPair], list[SkippedEdit]]:
    """All pairs of a ladder.

    ``curated[prompt_id][rung]`` is a list of (text, edit_kind, note). Prompts
    without a curated positive control are paired with a base prompt of another
    topic, chosen from the stable key.
    """
    pairs: list[PromptPair] = []
    skipped: list[SkippedEdit] = []
    for p in prompts:
        pairs.append(PromptPair(f"{p.id}/identical/identical", p.id, "identical", "identical", p.text, p.text, "generated"))
        for kind in EDIT_KINDS:
            if edit_kinds is not None and kind.name not in edit_kinds:
                continue
            try:
                b = apply_edit(kind, p.text, ladder=ladder, prompt_id=p.id)
            except NotApplicable as why:
                skipped.append(SkippedEdit(p.id, kind.rung, kind.name, str(why)))
                continue
            pairs.append(PromptPair(f"{p.id}/{kind.rung}/{kind.name}", p.id, kind.rung, kind.name, p.text, b, "generated"))
        mine = curated.get(p.id, {})
        for rung in CURATED_RUNGS:
            for n, (text, edit_kind, note) in enumerate(mine.get(rung, [])):
                suffix = edit_kind if len(mine.get(rung, [])) == 1 else f"{edit_kind}-{n + 1}"
                pairs.append(PromptPair(f"{p.id}/{rung}/{suffix}", p.id, rung, edit_kind, p.text, text, "curated", note))
        if not mine.get("positive_control"):
            others = [q for q in prompts if q.topic != p.topic]
            if not others:
                skipped.append(SkippedEdit(p.id, "positive_control", "unrelated_prompt", "no prompt of another topic"))
                continue
            rng = random.Random(seed_for(ladder, p.id, "positive_control", "unrelated_prompt"))
            q = others[rng.randrange(len(others))]
            pairs.append(
                PromptPair(
                    f"{p.id}/positive_control/unrelated_prompt", p.id, "positive_control", "unrelated_prompt",
                    p.text, q.text, "paired", f"paired with {q.id} (topic {q.topic})",
                )
            )
    return pairs, skipped
