"""The pair browser's data: every scored pair with both prompts, both outputs and its metrics.

pairs.parquet carries no text; the prompts come from ladder.json (by ``pair_id``) and the
outputs from generations.parquet (by ``model, variant, prompt_key_a/b``, replicate 0 for side a
and the highest replicate for side b, which is the identical rung's second decode). Both
``stabprobe show`` and report.html read them through :func:`browse_pairs`, so the terminal and the
page show the same texts.

Where the texts differ is found on the texts themselves (common prefix and suffix of the
prompts: the edit; common prefix of the outputs: the first divergence), so no tokenizer is
needed to read a run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core import rundir
from harness.ladder.textspans import common_ends
from harness.report.records import Span

PAGE_METRICS = ("emb_dist", "emb_dist_answer", "tok_edit_norm", "first_div", "js", "top1_flip", "hidden_dist",
                "div_margin_a", "twin_kl_ab", "twin_top1_changed_ab", "twin_first_top1_ab", "twin_llr_tok_ab")
"""Metrics shown per pair, in this order, where the run has them: the free-running distances, then what tells a
belief shift from one low-margin flip amplified (side A's margin where the outputs part; the teacher-forced twin
divergence on side A's output, harness.score.twin)."""
TEXT_LIMIT = 4000
"""Characters of an output kept in the page (the rest is cut, and the page says by how much)."""
PAGE_PAIRS = 3000
"""Pairs embedded in report.html at most, those that moved most first (the table says how many were left out)."""


def edit_span(a: str, b: str) -> Span:
    """The smallest middle part whose replacement turns a into b (common prefix and suffix kept)."""
    i, j = common_ends(a, b)
    return Span(i, len(a) - j, len(b) - j)


def divergence(a: str, b: str) -> int:
    """First character where two outputs part (``min(len)`` when one is a prefix of the other; len when equal)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def ladder_prompts(run_dir: Path) -> dict[str, tuple[str, str]]:
    """pair_id -> (prompt_a, prompt_b) from ladder.json ({} when the run has none)."""
    path = Path(run_dir) / "ladder.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {p["pair_id"]: (p["prompt_a"], p["prompt_b"]) for p in data.get("pairs", [])}


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def browse_pairs(pairs: pd.DataFrame, gens: pd.DataFrame | None, prompts: dict[str, tuple[str, str]],
                 length: int | None = None) -> list[dict[str, Any]]:
    """One record per pair × model × variant at ``length`` (default: the longest), most moved first.

    Keys: id (``model/variant/pair_id``), model, variant, rung, edit_kind, pair_id, length, the
    metrics of ``PAGE_METRICS`` present (None for NaN), prompt_a/b, out_a/b (None when the
    generations are missing), stop_a/b.
    """
    if pairs.empty:
        return []
    L = int(length if length is not None else pairs["length"].max())
    rows = pairs[pairs["length"] == L]
    texts: dict[tuple[str, str, str, int], tuple[str, str]] = {}
    if gens is not None and not gens.empty:
        for r in gens[["model", "variant", "prompt_key", "replicate", "gen_text", "stop_reason"]].itertuples(index=False):
            texts[(r.model, str(r.variant), r.prompt_key, int(r.replicate))] = (r.gen_text, r.stop_reason)
    metrics = [m for m in PAGE_METRICS if m in rows.columns]
    out = []
    for r in rows.to_dict("records"):
        model, variant = r["model"], str(r["variant"])
        a = texts.get((model, variant, r.get("prompt_key_a"), 0))
        # Side b of an identical pair is the second decode (replicate 1); any other pair's b is replicate 0.
        b = texts.get((model, variant, r.get("prompt_key_b"), 1)) or texts.get((model, variant, r.get("prompt_key_b"), 0))
        pa, pb = prompts.get(r["pair_id"], (None, None))
        rec = {"id": f"{model}/{variant}/{r['pair_id']}", "model": model, "variant": variant, "rung": r["rung"],
               "edit_kind": r.get("edit_kind", ""), "pair_id": r["pair_id"], "length": L,
               "prompt_a": pa, "prompt_b": pb, "out_a": a[0] if a else None, "out_b": b[0] if b else None,
               "stop_a": a[1] if a else None, "stop_b": b[1] if b else None}
        rec.update({m: _num(r.get(m)) for m in metrics})
        out.append(rec)
    out.sort(key=lambda d: (-(d.get("emb_dist") if d.get("emb_dist") is not None else -1.0), d["id"]))
    return out


def load_browse(run_dir: Path, length: int | None = None) -> list[dict[str, Any]]:
    """:func:`browse_pairs` straight from a run directory (pairs.parquet, generations.parquet, ladder.json)."""
    run_dir = Path(run_dir)
    pairs = pd.read_parquet(run_dir / rundir.PAIRS)
    gpath = run_dir / rundir.GENERATIONS
    gens = pd.read_parquet(gpath, columns=["model", "variant", "prompt_key", "replicate", "gen_text", "stop_reason"]) \
        if gpath.is_file() else None
    return browse_pairs(pairs, gens, ladder_prompts(run_dir), length)
