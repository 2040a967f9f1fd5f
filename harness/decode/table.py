"""Generations <-> generations.parquet rows (the round trip lets merge, resume and drift work from files)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from harness.decode.greedy import Generation
from harness.decode.prompt_end import from_columns



class ScaffoldSplit(Protocol):
    """What a row records of a scored side (harness.score.pairs.ScoredSide; decode sits below score)."""

    scaffold: str
    answer_start: int


_ARRAYS_INT = ("trace_top1_id", "trace_top2_id", "trace_flip_rival", "trace_head_top1_id")
_ARRAYS_FLOAT = ("trace_top1_logit", "trace_top2_logit", "trace_delta_tcb", "trace_flip_radius")
_NOT_STORED = ("hidden_means", "prompt_end", "prompt_end_logprobs", "states")


def generation_row(g: Generation, lengths: Sequence[int], side: ScaffoldSplit | None = None,
                   full_dist: bool = False) -> dict[str, Any]:
    """One table row. ``full_dist``: also the full prompt-end log-probabilities (``--store-full-dist``)."""
    d = {f.name: getattr(g, f.name) for f in dataclasses.fields(g) if f.name not in _NOT_STORED}
    # Token ids fit int32 (vocabularies are < 2^31): half the bytes of int64 lists; read back as int64.
    d["gen_ids"] = np.asarray(g.gen_ids, dtype=np.int32)
    d["trace_steps"] = np.asarray(g.trace_steps, dtype=np.int32)
    for k in _ARRAYS_INT:
        d[k] = np.asarray(getattr(g, k)).astype(np.int32)
    for k in _ARRAYS_FLOAT:
        d[k] = np.asarray(getattr(g, k)).astype(np.float32)
    pe = g.prompt_end
    d["prompt_end_top_ids"] = pe.top_ids.astype(np.int32)
    d["prompt_end_top_logprobs"] = pe.top_logprobs.astype(np.float32)
    d["prompt_end_tail_mass"] = pe.tail_mass
    d["prompt_end_vocab"] = pe.vocab_size
    d["prompt_end_non_finite"] = pe.non_finite
    d["prompt_end_top1_id"] = pe.top1_id
    d["prompt_end_top1_prob"] = pe.top1_prob
    d["prompt_end_margin"] = float(g.trace_margin[0]) if len(g.trace_margin) else float("nan")
    d["prompt_end_entropy"] = pe.entropy
    d["prompt_end_veff"] = pe.veff
    if full_dist:
        if g.prompt_end_logprobs is None:
            raise ValueError(f"full prompt-end distribution of {g.prompt_key} requested but not in memory")
        d["prompt_end_logprobs"] = np.asarray(g.prompt_end_logprobs, dtype=np.float32)
    for L in lengths:
        d[f"hidden_mean_{L}"] = np.asarray(g.hidden_means[L], dtype=np.float32)
    if side is not None:
        d["scaffold_status"] = side.scaffold
        d["answer_start"] = int(side.answer_start)
    return d


def generations_frame(gens: Sequence[Generation], lengths: Sequence[int], sides: dict | None = None,
                      full_dist: bool = False) -> pd.DataFrame:
    rows = [generation_row(g, lengths, None if sides is None else sides[(g.prompt_key, g.replicate)], full_dist)
            for g in gens]
    return pd.DataFrame(rows)


def generation_from_row(row: Any, lengths: Sequence[int]) -> Generation:
    get = row.__getitem__ if isinstance(row, (dict, pd.Series)) else lambda k: getattr(row, k)
    full = _opt(get, "prompt_end_logprobs")
    full = np.asarray(full, dtype=np.float32) if len(full) else None
    compact_end = None
    if len(_opt(get, "prompt_end_top_ids")):
        compact_end = from_columns(get("prompt_end_top_ids"), get("prompt_end_top_logprobs"), get("prompt_end_tail_mass"),
                                   get("prompt_end_vocab"), get("prompt_end_entropy"), get("prompt_end_veff"),
                                   get("prompt_end_non_finite"))
    return Generation(
        model=get("model"), variant=get("variant"), prompt_key=get("prompt_key"), replicate=int(get("replicate")),
        rendered_text=get("rendered_text"), n_prompt_tokens=int(get("n_prompt_tokens")),
        gen_ids=tuple(int(x) for x in get("gen_ids")), gen_text=get("gen_text"), stop_reason=get("stop_reason"),
        trace_top1_id=np.asarray(get("trace_top1_id"), dtype=np.int64),
        trace_top1_logit=np.asarray(get("trace_top1_logit"), dtype=np.float32),
        trace_top2_id=np.asarray(get("trace_top2_id"), dtype=np.int64),
        trace_top2_logit=np.asarray(get("trace_top2_logit"), dtype=np.float32),
        prompt_end_logprobs=full, prompt_end=compact_end,
        hidden_means={int(L): np.asarray(get(f"hidden_mean_{L}"), dtype=np.float32) for L in lengths},
        trace_steps=tuple(int(t) for t in _opt(get, "trace_steps")),
        trace_delta_tcb=np.asarray(_opt(get, "trace_delta_tcb"), dtype=np.float32),
        trace_flip_radius=np.asarray(_opt(get, "trace_flip_radius"), dtype=np.float32),
        trace_flip_rival=np.asarray(_opt(get, "trace_flip_rival"), dtype=np.int64),
        trace_head_top1_id=np.asarray(_opt(get, "trace_head_top1_id"), dtype=np.int64),
        **{k: _scalar(get, k, default) for k, default in _ENGINE_FIELDS.items()},
    )


# Columns added with the engines (harness.decode.engines); rows written before them read as HF generate.
_ENGINE_FIELDS = {"engine": "hf", "capture": "generate", "probe_agreement": float("nan"), "probe_first_disagreement": -1,
                  "probe_margin_at_disagreement": float("nan"), "probe_engine_token": -1, "probe_token": -1}


def _scalar(get, key, default):
    try:
        value = get(key)
    except (KeyError, AttributeError):
        return default
    if value is None:
        return default
    return type(default)(value)


def _opt(get, key):
    try:
        value = get(key)
    except (KeyError, AttributeError):
        return []
    if value is None or (isinstance(value, float) and np.isnan(value)):  # absent in a concatenated frame
        return []
    return value
