"""Lengths that add nothing: every output ended before them, so their rows repeat a shorter length's.

A run decodes once at its longest length and scores each shorter length on a prefix. When every
output of the run stopped within ``L_prev`` tokens, the texts at any longer length are the texts at
``L_prev``, and every row and figure panel at that length repeats the ``L_prev`` one (the demo's
512 tokens: every output ends before 64). The report says so once and leaves those rows out.
"""

from __future__ import annotations

import pandas as pd

from harness.report.records import LengthsView, Table


def lengths_view(lengths: list[int], gens: pd.DataFrame | None) -> LengthsView:
    """From the run's lengths and generations.parquet (``gen_ids`` per output)."""
    lengths = sorted(set(int(L) for L in lengths))
    if gens is None or gens.empty or "gen_ids" not in gens.columns or len(lengths) < 2:
        return LengthsView(lengths, {}, None)
    longest = int(max(len(x) for x in gens["gen_ids"]))
    kept, collapsed = [lengths[0]], {}
    for L in lengths[1:]:
        if longest <= kept[-1]:
            collapsed[L] = kept[-1]
        else:
            kept.append(L)
    return LengthsView(kept, collapsed, longest)


def drop_collapsed(table: Table, view: LengthsView) -> Table:
    """The table without rows at a collapsed length (its length column is ``L``); bold rows kept in step."""
    if not view.collapsed or "L" not in table.header:
        return table
    i = table.header.index("L")
    gone = {str(L) for L in view.collapsed}
    keep = [k for k, r in enumerate(table.rows) if r[i] not in gone]
    if len(keep) == len(table.rows):
        return table
    bold = {n for n, k in enumerate(keep) if k in table.bold_rows}
    empty = table.empty if keep else f"{table.empty}; {view.sentence()}"
    return Table(table.key, table.title, table.header, [table.rows[k] for k in keep], table.note, empty, bold)
