"""Teacher-forced drift of every variant against its reference, at merge time (harness.score.tf_drift).

Cells never see each other, so a variant's cell cannot read the reference's
tokens; the merge has every cell's generations. Per model it loads the
reference once and its HF variants together (as many at once as the memory
estimate allows: harness.run.worker_memory), feeds all of them the
reference's greedy tokens after each prompt all decoded, reading the
reference once per forward chunk for every variant (issue 30), and returns one
row per variant x prompt x length. Results are memoized under the run's cache
directory, per variant, keyed by both cells' decode keys and the reference's
tokens, so a cached re-run loads no weights.
"""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import ExitStack
from typing import Any, Callable, Sequence

import pandas as pd

from harness.core.memo import Memo, b64, unb64
from harness.core.noise import once_each, repeated
from harness.decode.invariant import invariant_linears
from harness.errors import error_line
from harness.models.variants import engine_of
from harness.run.tf_drift_llamacpp import llamacpp_rows
from harness.score.drift import reference_of
from harness.score.tf_drift import TF_COLUMNS, TF_VERSION, teacher_forced_many

KEYS = ("model", "variant", "length", "prompt_key")


def _encode(frame: pd.DataFrame) -> str | None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return b64(buf.getvalue())


def _decode(text: str | None) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(unb64(text)))  # type: ignore[arg-type]


def _prompt_ids(loaded, texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """prompt key -> token ids of every ladder prompt, rendered as the cells rendered them (the same policy)."""
    from harness.audit.render import render_distinct
    from harness.decode.greedy import prompt_key

    out: dict[str, tuple[int, ...]] = {}
    # skip_refused: a prompt the template refuses was never decoded either
    for r in render_distinct(loaded.tokenizer, loaded.policy, texts, skip_refused=True).values():
        out.setdefault(prompt_key(r.token_ids), tuple(int(i) for i in r.token_ids))
    return out


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=False)


def _fits_together(entry, ref: str, variants: Sequence[str]) -> list[list[str]]:
    """``variants`` in groups read beside one reference forward: as many at once as the memory estimate of
    harness.run.worker_memory allows (the reference and every variant of a group loaded together), else one at a
    time."""
    from harness.run.worker_memory import WORK_FACTOR, available_mib, weights_bytes

    free = available_mib()
    groups: list[list[str]] = []
    need = WORK_FACTOR * weights_bytes(entry, ref) / 2**20
    for v in variants:
        more = WORK_FACTOR * weights_bytes(entry, v) / 2**20
        if groups and need + more <= free:
            groups[-1].append(v)
            need += more
        else:
            groups.append([v])
            need = WORK_FACTOR * (weights_bytes(entry, ref) + weights_bytes(entry, v)) / 2**20
    return groups


def teacher_forced_frame(models, texts: Sequence[str], lengths: Sequence[int], gens: pd.DataFrame,
                         records: Sequence[dict[str, Any]], loader: Callable, cache_dir=None, progress: bool = False
                         ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows (model, variant, length, prompt_key, tf_*) for every non-reference variant; and per cell "ok" or why not.

    The HF variants of a model that read the same reference tokens are read together: one reference forward per
    chunk of outputs serves all of them (harness.score.tf_drift.teacher_forced_many), with as many variants loaded
    at once as the memory estimate allows (the note says when they were read apart). ``progress``: a progress bar
    per group. Third-party warnings inside are shown once each and counted in the cell's note
    (harness.core.noise)."""
    notes: dict[str, str] = {}
    warned: dict[str, str] = {}
    frames: list[pd.DataFrame] = []
    if gens.empty:
        return pd.DataFrame(columns=[*KEYS, *TF_COLUMNS]), notes
    memo = Memo(cache_dir)
    by_name = {e.name: e for e in models}
    decode_key = {(r["name"], r["variant"]): r.get("cache_key", "") for r in records if r.get("status") == "ok"}
    for model, g in gens.groupby("model", sort=True):
        variants = list(dict.fromkeys(g["variant"]))
        entry = by_name[model]
        loaded_ref: dict[str, Any] = {}
        todo: dict[tuple[str, str], list[str]] = {}  # (reference, tokens digest) -> HF variants not in the memo
        plan: dict[str, tuple[str, dict, list[str]]] = {}  # variant -> (reference, tokens, memo parts)
        for variant in variants:
            ref = reference_of(variant, variants)
            if ref == variant or ref not in variants:
                continue
            name = f"{model}--{variant}"
            if engine_of(variant) not in ("hf", "llamacpp"):
                # The same weights on another engine: read teacher-forced they are the reference itself; the
                # engine's own reading is the probe's agreement with its tokens (manifest `probe`).
                notes[name] = f"skipped: engine {engine_of(variant)} (teacher-forced drift compares weights, read by HF)"
                continue
            first = g[g["replicate"] == 0]
            mine = set(first.loc[first["variant"] == variant, "prompt_key"])
            refs = first[(first["variant"] == ref) & first["prompt_key"].isin(mine)].sort_values("prompt_key")
            if refs.empty:
                notes[name] = f"no prompt decoded by both {ref} and {variant}"
                continue
            tokens = {k: tuple(int(t) for t in ids) for k, ids in zip(refs["prompt_key"], refs["trace_top1_id"])}
            digest = hashlib.sha256(json.dumps(sorted(tokens.items())).encode()).hexdigest()
            parts = [TF_VERSION, decode_key.get((model, ref), ""), decode_key.get((model, variant), ""), digest,
                     ",".join(str(L) for L in lengths)]
            plan[variant] = (ref, tokens, parts)
            if engine_of(variant) == "hf" and not memo.has("tf-drift", parts):
                todo.setdefault((ref, digest), []).append(variant)
        together: dict[str, list[str]] = {}  # variant -> the HF variants read beside it
        apart: dict[str, str] = {}  # variant -> why it was not read beside every other one
        for (ref, _), vs in todo.items():
            groups = _fits_together(entry, ref, vs)
            for grp in groups:
                together.update({v: grp for v in grp})
                if len(groups) > 1:
                    apart.update({v: f"read apart from the other variants ({len(groups)} groups): their weights "
                                     "would not fit in memory at once (harness.run.worker_memory)" for v in grp})
        computed: dict[str, pd.DataFrame] = {}

        def compute(variant: str) -> pd.DataFrame:
            ref, tokens, _ = plan[variant]
            if variant in computed:
                return computed.pop(variant)
            if ref not in loaded_ref:
                loaded_ref[ref] = loader(entry, ref)
            r = loaded_ref[ref]
            ids = _prompt_ids(r, texts)
            items = [(k, ids[k], toks) for k, toks in tokens.items() if k in ids and toks]
            group = together.get(variant, [variant])
            label = ",".join(group)
            with _bar(len(items), f"teacher-forced {model}--{label}", progress) as bar, once_each() as seen:
                if engine_of(variant) == "llamacpp":  # the GGUF read by llama.cpp (harness.run.tf_drift_llamacpp)
                    rows = {variant: llamacpp_rows(r, loader(entry, variant), items, lengths)}
                    bar.update(len(items))
                else:
                    qs = {v: loader(entry, v) for v in group}
                    # the decode's contract: where a linear kernel rounds by batch size, fixed-size chunks
                    with ExitStack() as stack:
                        for x in (r, *qs.values()):
                            stack.enter_context(invariant_linears(x))
                        rows = teacher_forced_many(r.model, {v: q.model for v, q in qs.items()}, items, lengths,
                                                   progress=bar)
                    del qs
            for v in rows:
                # counted over the whole group: which variant's layers raised each cannot be told apart
                text = repeated(seen)
                warned[f"{model}--{v}"] = f"(while reading {label}) {text}" if text and len(rows) > 1 else text
                computed[v] = pd.DataFrame(rows[v], columns=["prompt_key", "length", *TF_COLUMNS])
            return computed.pop(variant)

        for variant, (ref, tokens, parts) in plan.items():
            name = f"{model}--{variant}"
            try:
                frame = memo.get("tf-drift", parts, lambda variant=variant: compute(variant), encode=_encode,
                                 decode=_decode)
            except Exception as exc:  # noqa: BLE001 - recorded in the manifest; free-running drift stands
                notes[name] = f"failed: {error_line(exc)}"
                continue
            missing = len(tokens) - frame["prompt_key"].nunique()
            grp = together.get(variant, [variant])
            notes[name] = "ok" + (f" ({missing} prompts could not be re-rendered)" if missing else "") + (
                f"; read beside {ref} with {','.join(x for x in grp if x != variant)}" if len(grp) > 1 else "") + (
                f"; {apart[variant]}" if variant in apart else "") + (
                f"; third-party warnings shown once: {warned[name]}" if warned.get(name) else "")
            frames.append(frame.assign(model=model, variant=variant))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, *TF_COLUMNS]), notes
    return pd.concat(frames, ignore_index=True)[[*KEYS, *TF_COLUMNS]], notes


def with_tf_columns(drift: pd.DataFrame, tf: pd.DataFrame) -> pd.DataFrame:
    """drift.parquet rows with the teacher-forced columns of their (model, variant, length, variant's prompt)."""
    if drift.empty:
        return drift.assign(**{c: pd.Series(dtype=float) for c in TF_COLUMNS})
    right = tf.rename(columns={"prompt_key": "prompt_key_b"})
    out = drift.merge(right, on=["model", "variant", "length", "prompt_key_b"], how="left")
    return out
