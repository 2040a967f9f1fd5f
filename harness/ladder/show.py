"""Printing a ladder with its edits made visible."""

from __future__ import annotations

from harness.ladder.textspans import bounded_opcodes
import re
import unicodedata

from harness.ladder.coverage import coverage_lines
from harness.ladder.records import PromptPair, Ladder, rung_info

_VISIBLE = {" ": "·", "\n": "⏎\n", "\t": "→", "\u200b": "⟨ZWSP⟩", "\u00a0": "⟨NBSP⟩"}
# A prompt may contain the marker characters themselves; they are escaped so
# that every "·" on screen is a space.
_MARKERS = frozenset("·⏎→⟨⟩")
LEGEND = "legend: · space, ⏎ newline, → tab, ⟨ZWSP⟩ zero-width space, ⟨U+XXXX⟩ an invisible, combining or compatibility character"


def _needs_code(ch: str) -> bool:
    cat = unicodedata.category(ch)
    if ch in _MARKERS or cat in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp") or cat.startswith("M"):
        return True
    if cat == "Zs":  # every space that is not U+0020 looks like one
        return True
    return not ch.isascii() and unicodedata.normalize("NFKC", ch) != ch


def visible(text: str, line_breaks: bool = True) -> str:
    """``text`` with whitespace and invisible characters drawn; ``line_breaks=False`` keeps it on one line."""
    out = []
    for ch in text:
        if ch == "\n" and not line_breaks:
            out.append("⏎")
        elif ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif _needs_code(ch):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


# Words whole, every other character alone: a swapped word reads as one change.
_PIECES = re.compile(r"\w+|.", re.DOTALL)


def describe_change(a: str, b: str, limit: int = 3) -> str:
    """Where B differs from A, as ``@offset 'old' -> 'new'`` (visible form); for generated edits."""
    pa, pb = _PIECES.findall(a), _PIECES.findall(b)
    starts = [0]
    for piece in pa:
        starts.append(starts[-1] + len(piece))
    ops = [op for op in bounded_opcodes(pa, pb) if op[0] != "equal"]
    parts = [
        f"@{starts[i1]} '{visible(''.join(pa[i1:i2]), False)}' -> '{visible(''.join(pb[j1:j2]), False)}'"
        for _, i1, i2, j1, j2 in ops[:limit]
    ]
    if len(ops) > limit:
        parts.append(f"(+{len(ops) - limit} more)")
    return "; ".join(parts) or "no change"


def _pair_lines(p: PromptPair) -> list[str]:
    lines = [f"[{p.pair_id}] rung={p.rung} edit={p.edit_kind} origin={p.origin}"]
    if p.note:
        lines.append(f"  note: {p.note}")
    # continuation lines of a multi-line prompt stay under their A:/B: column
    lines.append("  A: " + visible(p.prompt_a).replace("\n", "\n     "))
    lines.append("  B: " + visible(p.prompt_b).replace("\n", "\n     "))
    if p.origin == "generated" and not rung_info(p.rung).is_noise_floor:
        lines.append(f"  Δ: {describe_change(p.prompt_a, p.prompt_b)}")
    return lines


def show_ladder(ladder: Ladder, rung: str | None = None) -> str:
    lines = [f"ladder {ladder.name} ({ladder.source}): {len(ladder.prompts)} prompts, {len(ladder.pairs)} pairs"]
    lines += ["  " + line for line in coverage_lines(ladder)]
    lines.append(LEGEND)
    for p in ladder.pairs:
        if rung is None or p.rung == rung:
            lines += _pair_lines(p)
    return "\n".join(lines)
