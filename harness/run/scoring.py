"""Runs whose distances may be set side by side: the same scoring inputs, not only the same ladder.

Two runs with bitwise-identical generations but a different embedder give different embedding distances: a
comparison of them reports regressions that are the embedder's, not the model's (the probe: "2 regressed,
9 improved" from a MiniLM copy with noise on one layer). ``compare``, ``merge`` and ``--resume`` call
:func:`scoring_differences` first and refuse when it names anything.
"""

from __future__ import annotations

from typing import Any

from harness.errors import InputError

EMBEDDER_FIELDS = ("sha256", "max_seq_length", "long_text", "window", "overlap")
"""What decides an embedding distance (its weights, by hash, and how long texts are read; not its display name,
the directory it was loaded from or its thread count)."""


def scoring_inputs(manifest: Any, embedder: dict[str, Any] | None = None, scorer: str | None = None) -> dict[str, Any]:
    """The scoring inputs a manifest (pydantic or dict) records; ``embedder``/``scorer`` override them (a resume:
    what this process would score with)."""
    data = manifest.to_json_dict() if hasattr(manifest, "to_json_dict") else dict(manifest)
    emb = embedder if embedder is not None else (data.get("config") or {}).get("embedder") or {}
    out = {f"embedder.{k}": emb.get(k) for k in EMBEDDER_FIELDS}
    out["scorer_version"] = scorer if scorer is not None else data.get("scorer_version")
    return out


def scoring_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``field: A vs B`` for every scoring input that differs. A field one side did not record (a run from before
    it was recorded) is not called different: only what both recorded is compared."""
    return [f"{k}: {_short(a[k])} vs {_short(b[k])}" for k in a
            if a.get(k) is not None and b.get(k) is not None and a[k] != b[k]]


def refuse_different_scoring(file: str, a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    """InputError (exit 2) naming the first differing field when the scoring inputs differ."""
    diffs = scoring_differences(a, b)
    if diffs:
        field = diffs[0].split(":", 1)[0]
        raise InputError(file, field if field == "scorer_version" else f"config.{field}",
                         f"{what} with different scoring inputs ({'; '.join(diffs)}): their distances are not "
                         "comparable")


def _short(v: Any) -> str:
    s = str(v)
    return s[:19] if s.startswith("sha256:") else s
