"""Teacher-forced drift: a variant read on the reference's own greedy tokens (llama.cpp ``--kl-divergence``).

Free-running drift (harness.score.drift) compares two greedy outputs and
saturates after the first token where they part. Here both the reference
(bf16) and the variant are fed the same tokens -- the prompt and the
reference's greedy output -- and compared position by position
(``../shared/METRICS.md``, "Teacher-forced drift"): at generated step t,

- ``KL_t = KL(p_ref,t || p_q,t)`` in nats, from float64 log-softmax of both
  models' logits (never negative; exactly 0 where the logits are equal);
- same top-1: ``argmax p_q,t == argmax p_ref,t``;
- ``dp_t = p_q,t(y_t) - p_ref,t(y_t)`` for the reference's token ``y_t``.

Per prompt and output length L (the first min(L, steps) positions): mean,
median, p99 and max of KL_t, the same-top-1 share, the mean dp_t and the first
1-based step whose top-1 differs (NaN when none does: never 0). Memory: one
output's steps x V logits per model at a time (``logits_to_keep``), reduced in
chunks of ``CHUNK`` positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.score.records import StepDivergence

TF_VERSION = "2"
"""2: rows batching (outputs of any length share a forward). It changes no value where the kernels are
batch-invariant (tests/score/test_tf_drift.py); bitsandbytes int8's rows depend on their batch mates, so its
cached readings from version 1 are not reused."""
CHUNK = 64
"""Positions reduced at once: bounds the float64 temporaries at CHUNK x V per model."""
TF_COLUMNS = ("tf_positions", "tf_kl_mean", "tf_kl_median", "tf_kl_p99", "tf_kl_max", "tf_same_top1", "tf_dp_mean",
              "tf_first_top1_diff", "tf_kl_steps")
"""Columns added to drift.parquet (NaN / empty on rows without a teacher-forced reading, e.g. the reference's own)."""


def step_divergence(ref_logits, var_logits, tokens: Sequence[int], chunk: int = CHUNK) -> StepDivergence:
    """KL, same top-1 and dp per step from two [steps, V] logit tensors (torch) of the same positions."""
    import torch

    if ref_logits.shape != var_logits.shape or ref_logits.shape[0] != len(tokens):
        raise ValueError(f"logits {tuple(ref_logits.shape)} / {tuple(var_logits.shape)} for {len(tokens)} tokens")
    y = torch.as_tensor(list(tokens), dtype=torch.long, device=ref_logits.device)
    kl, same, dp = [], [], []
    for s in range(0, len(tokens), chunk):
        zr, zq = ref_logits[s:s + chunk].double(), var_logits[s:s + chunk].double().to(ref_logits.device)
        lr, lq = torch.log_softmax(zr, dim=-1), torch.log_softmax(zq, dim=-1)
        pr = lr.exp()
        # 0 * (-inf - -inf) is nan: a token the reference gives no mass contributes nothing.
        terms = torch.where(pr > 0, pr * (lr - lq), torch.zeros_like(pr))
        k = terms.sum(dim=-1).clamp_min(0.0)  # Gibbs: what is left below 0 is float64 rounding
        k = torch.where((zr == zq).all(dim=-1), torch.zeros_like(k), k)  # equal logits: exactly 0
        kl.append(k)
        same.append(torch.argmax(zr, dim=-1) == torch.argmax(zq, dim=-1))
        yy = y[s:s + chunk, None]
        dp.append(lq.gather(1, yy)[:, 0].exp() - lr.gather(1, yy)[:, 0].exp())
    return StepDivergence(torch.cat(kl).cpu().numpy(), torch.cat(same).cpu().numpy(), torch.cat(dp).cpu().numpy())


def summarize(d: StepDivergence, length: int) -> dict[str, object]:
    """The drift.parquet columns over the first min(length, steps) positions."""
    n = min(int(length), d.kl.size)
    kl, same, dp = d.kl[:n], d.same_top1[:n], d.dp[:n]
    differ = np.flatnonzero(~same)
    if n == 0:
        nan = float("nan")
        return {"tf_positions": 0, "tf_kl_mean": nan, "tf_kl_median": nan, "tf_kl_p99": nan, "tf_kl_max": nan,
                "tf_same_top1": nan, "tf_dp_mean": nan, "tf_first_top1_diff": nan, "tf_kl_steps": []}
    return {
        "tf_positions": n, "tf_kl_mean": float(kl.mean()), "tf_kl_median": float(np.median(kl)),
        "tf_kl_p99": float(np.percentile(kl, 99)), "tf_kl_max": float(kl.max()),
        "tf_same_top1": float(same.mean()), "tf_dp_mean": float(dp.mean()),
        "tf_first_top1_diff": float(differ[0] + 1) if differ.size else float("nan"),
        "tf_kl_steps": kl.astype(np.float64).tolist(),
    }


BATCH = 16
"""Items of one shape per forward in the fallback (a model rows batching cannot run): batch x steps x V float32
logits per model (16 x 64 x 151,936 x 4 B = 0.6 GB at Qwen3's vocabulary, 0.2 GB at SmolLM2's)."""


def _batches(items: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> list[list[int]]:
    """Indices of ``items`` grouped by (input length, steps), at most BATCH each: no padding enters any row, so a
    row's logits are the one-at-a-time row's wherever the kernels are batch-invariant (harness.decode.invariant)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, prompt_ids, tokens) in enumerate(items):
        groups.setdefault((len(prompt_ids) + len(tokens) - 1, len(tokens)), []).append(i)
    return [g[j:j + BATCH] for g in groups.values() for j in range(0, len(g), BATCH)]


def _vocab(model) -> int:
    head = model.get_output_embeddings()
    return int(getattr(head, "out_features", 0) or head.weight.shape[0])


def _logits(model, batch, rows: bool) -> list:
    from harness.decode.probe import step_logits_batch, step_logits_rows

    if rows:
        return step_logits_rows(model, batch)
    return list(step_logits_batch(model, batch))


def teacher_forced_rows(ref_model, var_model, items: Sequence[tuple[str, Sequence[int], Sequence[int]]],
                        lengths: Sequence[int], progress=None, batching: str = "rows") -> list[dict[str, object]]:
    """One row per (prompt key, length), in ``items`` order: ``items`` are (prompt key, prompt ids, the reference's
    tokens). ``progress`` (a tqdm-like) advances per item.

    ``batching``: "rows" packs outputs of any lengths into one forward per model (harness.decode.probe.step_logits_rows,
    grouped by :func:`harness.decode.probe.rows_chunks`); "shape" shares a forward only among outputs of one shape
    (the fallback where a model cannot run rows batching, chosen here on its first forward); "single" runs one
    output per forward (the unbatched path the tests compare with).
    """
    from harness.decode.probe import rows_chunks
    from harness.decode.rows import RowsUnsupported

    if batching not in ("rows", "shape", "single"):
        raise ValueError(f"batching {batching!r}: rows, shape or single")
    rows = batching == "rows"
    if rows:
        shapes = [(len(p) + len(t) - 1, len(t)) for _, p, t in items]
        groups = rows_chunks(shapes, max(_vocab(ref_model), _vocab(var_model)))
    else:
        groups = _batches(items) if batching == "shape" else [[i] for i in range(len(items))]
    by_item: dict[int, list[dict[str, object]]] = {}
    for n, idx in enumerate(groups):
        batch = [(items[i][1], items[i][2]) for i in idx]
        try:
            ref, var = _logits(ref_model, batch, rows), _logits(var_model, batch, rows)
        except RowsUnsupported:
            if n:  # a model runs every forward the same way: only the first can find it cannot
                raise
            return teacher_forced_rows(ref_model, var_model, items, lengths, progress, batching="shape")
        for b, i in enumerate(idx):
            key, _, tokens = items[i]
            d = step_divergence(ref[b], var[b], tokens)
            by_item[i] = [{"prompt_key": key, "length": int(L), **summarize(d, L)} for L in lengths]
        del ref, var
        if progress is not None:
            progress.update(len(idx))
    return [row for i in range(len(items)) for row in by_item[i]]
