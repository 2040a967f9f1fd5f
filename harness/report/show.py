"""`stabprobe show RUN_DIR`: the headline, the pairs that moved most with their outputs, or one pair by id.

Reads summary.json and the parquet files only (no model), through the same headline and pair
records as report.html, and renders them with rich (tables, colours when a terminal is attached,
plain text when piped). Model outputs are printed as text, never as rich markup.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from harness.core import rundir
from harness.ladder.records import CONTROL_RUNGS
from harness.errors import InputError
from harness.report.browse import browse_pairs, divergence, edit_span, ladder_prompts
from harness.report.headline import RUNG_WORDS, build_headline
from harness.report.lengths import lengths_view
from harness.report.text import fmt, mde_text

_METRICS = ("emb_dist", "tok_edit_norm", "first_div", "js", "twin_kl_ab", "twin_first_top1_ab")


def _visible(s: str) -> str:
    return s.replace(" ", "·").replace("\n", "⏎").replace("\t", "→").replace("\u200b", "⟨ZWSP⟩") or "∅"


def _marked_prompt(text: str, start: int, end: int) -> Text:
    t = Text(text[:start])
    edit = text[start:end]
    # Whitespace made visible only in a short edit (a whole new sentence stays readable).
    t.append(_visible(edit) if len(edit) <= 40 else edit, style="black on yellow")
    t.append(text[end:])
    return t


def _marked_output(text: str | None, d: int) -> Text:
    if text is None:
        return Text("(no generation recorded)", style="italic")
    if not text:
        return Text("(empty output: the first token was end-of-sequence)", style="italic red")
    t = Text(text[:d])
    if d < len(text):
        t.append(text[d], style="bold white on red")
        t.append(text[d + 1:], style="red")
    return t


def _pair_block(console: Console, rec: dict) -> None:
    console.rule(Text(f"{rec['id']}  ({rec['rung']} / {rec['edit_kind']}, {rec['length']} tokens)"))
    metrics = "  ".join(f"{m} {fmt(rec[m]) if rec.get(m) is not None else '–'}" for m in _METRICS
                        if m in rec and not (m.startswith("twin_") and rec.get("twin_kl_ab") is None))
    console.print(Text(metrics, style="dim"))
    grid = RichTable(show_header=True, expand=True, show_lines=True)
    grid.add_column("side a")
    grid.add_column("side b")
    pa, pb = rec.get("prompt_a"), rec.get("prompt_b")
    if pa is not None and pb is not None:
        s = edit_span(pa, pb)
        grid.add_row(_marked_prompt(pa, s.start, s.end_a), _marked_prompt(pb, s.start, s.end_b))
    oa, ob = rec.get("out_a"), rec.get("out_b")
    d = divergence(oa, ob) if oa is not None and ob is not None else 0
    grid.add_row(_marked_output(oa, d), _marked_output(ob, d))
    console.print(grid)


def show_run(run_dir: Path, pair: str | None = None, worst: int = 5, length: int | None = None,
             width: int | None = None) -> str:
    """The text `stabprobe show` prints (rich-rendered; colours only when stdout is a terminal)."""
    run_dir = Path(run_dir)
    spath = run_dir / rundir.SUMMARY
    if not spath.is_file():
        raise InputError(str(run_dir), rundir.SUMMARY, "missing: not a finished run directory (stabprobe report RUN_DIR rebuilds it)")
    summary = json.loads(spath.read_text(encoding="utf-8"))
    import pandas as pd

    pairs = pd.read_parquet(run_dir / rundir.PAIRS)
    gpath = run_dir / rundir.GENERATIONS
    gens = pd.read_parquet(gpath, columns=["model", "variant", "prompt_key", "replicate", "gen_text", "stop_reason", "gen_ids"]) \
        if gpath.is_file() else None
    view = lengths_view(sorted(set(pairs["length"])) if not pairs.empty else [], gens)
    head = build_headline(summary, view.informative)
    import sys

    buf = io.StringIO()
    console = Console(file=buf, width=width or 120, force_terminal=sys.stdout.isatty(), highlight=False, markup=False)
    L = length or head.length
    records = browse_pairs(pairs, gens, ladder_prompts(run_dir), L)
    if pair is not None:
        chosen = [r for r in records if r["id"] == pair] or [r for r in records if r["pair_id"] == pair]
        if not chosen:
            raise InputError(str(run_dir), "--pair", f"no pair {pair!r} at {L} tokens (ids look like {records[0]['id'] if records else 'MODEL/VARIANT/PAIR_ID'})")
        for r in chosen:
            _pair_block(console, r)
        return buf.getvalue().rstrip("\n")
    for s in head.sentences:
        console.print(Text(s, style="bold"))
    console.print(Text(head.determinism))
    if head.rows:
        t = RichTable(title=f"moves under {RUNG_WORDS.get(head.rung, head.rung)} (mean embedding distance, {head.length} tokens)",
                      title_justify="left")
        others = head.other_rungs[:3]  # a terminal is narrow; report.html shows every rung
        for c in ("model", "variant", "mean [95% CI]", "cluster", "MDE", "prompts", *others):
            t.add_column(c, justify="right" if c not in ("model", "variant") else "left")
        for r in head.rows:
            t.add_row(r.model, r.variant, f"{fmt(r.mean)} [{fmt(r.ci95[0])}, {fmt(r.ci95[1])}]", r.cluster, mde_text(r.mde),
                      str(r.n_prompts), *[r.others.get(k, "-") for k in others])
        console.print(t)
    for trap in head.traps:
        console.print(Text("trap: " + trap, style="yellow"))
    if not head.traps:
        console.print("No trap fired (no flag raised, every model ran).")
    if view.collapsed:
        console.print(Text(view.sentence(), style="dim"))
    moved = [r for r in records if r["rung"] not in CONTROL_RUNGS][:max(worst, 0)]
    if moved:
        console.print(Text(f"\nThe {len(moved)} pairs that moved most (besides the positive control); "
                           "`stabprobe show RUN_DIR --pair ID` shows any other:", style="bold"))
        for r in moved:
            _pair_block(console, r)
    return buf.getvalue().rstrip("\n")
