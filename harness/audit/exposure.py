"""Tokenizer exposure: which edits a model can even see.

For each model and edit kind, the share of pairs whose two prompts still differ
after the model's chat template and tokenizer. An edit a model never sees says
nothing about that model's stability: a template that trims the message erases
every edge-whitespace edit before the model runs.
"""

from __future__ import annotations

import pandas as pd

from harness.ladder.edits import EDIT_KINDS
from harness.ladder.records import MECHANICAL_RUNGS, NOISE_FLOOR, rung_order
from harness.ladder.synonyms import LEXICON_EDIT_KIND

EXPOSURE = "exposure.parquet"
COLUMNS = ["model", "rung", "edit_kind", "pairs", "survived", "share"]
CURATED = "curated"
"""The edit_kind every hand-written variant is counted under: their labels are one per pair."""

_GENERATED = {k.name for k in EDIT_KINDS} | {LEXICON_EDIT_KIND, "unrelated_prompt"}


def _kind_label(rung: str, edit_kind: str) -> str:
    return edit_kind if rung in MECHANICAL_RUNGS or edit_kind in _GENERATED else CURATED


def exposure_table(audit: pd.DataFrame) -> pd.DataFrame:
    """One row per model x rung x edit_kind: pairs, surviving pairs and their share.

    Pairs dropped as ``identical_input`` (the edit did nothing to the string) and
    ``exceeds_context`` are not exposure questions and are left out of the share.
    The identical rung is left out too: it is kept on purpose, not because it survived.
    """
    if audit.empty:
        return pd.DataFrame(columns=COLUMNS)
    if "variant" in audit.columns:
        # Exposure is a property of the tokenizer and template: one variant per model
        # (bf16 when present) so variants sharing them are not counted twice.
        # Variants with their own template kwargs (-nothink) stay in audit.parquet.
        first = audit.assign(_ref=audit["variant"] != "bf16").sort_values("_ref", kind="stable")
        chosen = first.groupby("model", sort=False)["variant"].first()
        audit = audit[audit["variant"] == audit["model"].map(chosen)]
    relevant = audit[(audit["rung"] != NOISE_FLOOR) & ~audit["reason"].isin(["identical_input", "exceeds_context", "invalid_text"])]
    if relevant.empty:
        return pd.DataFrame(columns=COLUMNS)
    relevant = relevant.assign(edit_kind=[_kind_label(r, k) for r, k in zip(relevant["rung"], relevant["edit_kind"])])
    g = relevant.groupby(["model", "rung", "edit_kind"], sort=False)
    out = g.agg(pairs=("kept", "size"), survived=("kept", "sum")).reset_index()
    out["pairs"] = out["pairs"].astype(int)
    out["survived"] = out["survived"].astype(int)
    out["share"] = out["survived"] / out["pairs"]
    return _ordered(out[COLUMNS])


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    kind_at = {k.name: i for i, k in enumerate(EDIT_KINDS)}
    key = table.assign(
        _r=table["rung"].map(rung_order),
        _k=table["edit_kind"].map(lambda k: kind_at.get(k, len(kind_at))),
    )
    key = key.sort_values(["model", "_r", "_k", "edit_kind"], kind="stable")
    return key.drop(columns=["_r", "_k"]).reset_index(drop=True)


def exposure_text(table: pd.DataFrame) -> str:
    """The table as text: one row per edit kind, one column per model, ``share (survived/pairs)``."""
    if table.empty:
        return "tokenizer exposure: no pairs to measure"
    models = list(dict.fromkeys(table["model"]))
    rows = list(dict.fromkeys(zip(table["rung"], table["edit_kind"])))
    cells = {(r.model, r.rung, r.edit_kind): f"{r.share:.2f} ({r.survived}/{r.pairs})" for r in table.itertuples()}
    width = max(12, *(len(m) for m in models), *(len(c) for c in cells.values()))
    head = f"{'rung':<18}{'edit_kind':<22}" + "".join(f"{m:>{width + 2}}" for m in models)
    lines = [
        "tokenizer exposure: share of pairs whose prompts still differ after each model's template and tokenizer",
        head,
        "-" * len(head),
    ]
    for rung, kind in rows:
        lines.append(f"{rung:<18}{kind:<22}" + "".join(f"{cells.get((m, rung, kind), '-'):>{width + 2}}" for m in models))
    return "\n".join(lines)
