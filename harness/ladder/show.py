"""Printing a ladder with its edits made visible."""

from __future__ import annotations

import unicodedata

from harness.ladder.records import Ladder

_VISIBLE = {" ": "·", "\n": "⏎\n", "\t": "→", "\u200b": "⟨ZWSP⟩", "\u00a0": "⟨NBSP⟩"}


def visible(text: str) -> str:
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif unicodedata.category(ch) in ("Cf", "Mn") or (not ch.isascii() and unicodedata.normalize("NFKC", ch) != ch):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


def show_ladder(ladder: Ladder, rung: str | None = None) -> str:
    counts = ", ".join(f"{r}: {n}" for r, n in ladder.rung_counts().items())
    lines = [f"ladder {ladder.name} ({ladder.source}): {len(ladder.prompts)} prompts, {len(ladder.pairs)} pairs", f"  {counts}"]
    for p in ladder.pairs:
        if rung and p.rung != rung:
            continue
        lines.append(f"[{p.pair_id}] rung={p.rung} edit={p.edit_kind} origin={p.origin}")
        lines.append(f"  A: {visible(p.prompt_a)}")
        lines.append(f"  B: {visible(p.prompt_b)}")
    if ladder.skipped:
        lines.append(f"skipped edits ({len(ladder.skipped)}):")
        lines += [f"  {s.prompt_id} {s.rung}/{s.edit_kind}: {s.reason}" for s in ladder.skipped]
    return "\n".join(lines)
