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
1-based step whose top-1 differs (NaN when none does: never 0). Memory: the
steps x V logits of one forward chunk of outputs per model (only the rows read
go through the head; at most ``harness.decode.probe.ROWS_LOGIT_BUDGET``),
reduced in chunks of ``CHUNK`` positions. Several variants of one model are
read beside one reference forward (:func:`teacher_forced_many`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from harness.score.records import StepDivergence

TF_VERSION = "3"
"""2: rows batching (outputs of any length share a forward). 3: the prefix every item of a forward shares computed
once (harness.decode.probe.shared_prefix), every variant of a model read beside one reference forward, and forwards
chunked on the positions after the shared prefix. Neither changes a value where the kernels are batch-invariant
(bf16 and bitsandbytes nf4: bitwise equal to one output per forward, tests/score/test_tf_drift.py);
bitsandbytes int8's rows depend on their batch mates (LLM.int8 picks outlier columns over every row of a call), so
its readings change with the forwards' new composition and cached readings of earlier versions are not reused."""
CHUNK = 64
"""Positions reduced at once: bounds the float64 temporaries at CHUNK x V per model."""
TF_COLUMNS = ("tf_positions", "tf_kl_mean", "tf_kl_median", "tf_kl_p99", "tf_kl_max", "tf_same_top1", "tf_dp_mean",
              "tf_first_top1_diff", "tf_kl_steps")
"""Columns added to drift.parquet (NaN / empty on rows without a teacher-forced reading, e.g. the reference's own)."""


def step_divergence(ref_logits, var_logits, tokens: Sequence[int], chunk: int = CHUNK) -> StepDivergence:
    """KL, same top-1 and dp per step from two [steps, V] logit tensors (torch) of the same positions."""
    return step_divergences(ref_logits, [var_logits], tokens, chunk)[0]


def step_divergences(ref_logits, var_logits: Sequence, tokens: Sequence[int],
                     chunk: int = CHUNK) -> list[StepDivergence]:
    """:func:`step_divergence` of several variants' [steps, V] logits against one reference's: the reference's
    float64 log-softmax, probabilities and argmax are computed once per chunk of positions and read by every
    variant (the same operations in the same order as one variant alone: the same values)."""
    import torch

    for v in var_logits:
        if ref_logits.shape != v.shape or ref_logits.shape[0] != len(tokens):
            raise ValueError(f"logits {tuple(ref_logits.shape)} / {tuple(v.shape)} for {len(tokens)} tokens")
    y = torch.as_tensor(list(tokens), dtype=torch.long, device=ref_logits.device)
    kl: list[list] = [[] for _ in var_logits]
    same: list[list] = [[] for _ in var_logits]
    dp: list[list] = [[] for _ in var_logits]
    for s in range(0, len(tokens), chunk):
        zr = ref_logits[s:s + chunk].double()
        lr = torch.log_softmax(zr, dim=-1)
        pr = lr.exp()
        mass = pr > 0
        everywhere = bool(mass.all())  # float64 probabilities rarely underflow: then no masking is needed
        top_r = torch.argmax(zr, dim=-1)
        yy = y[s:s + chunk, None]
        p_ref_y = lr.gather(1, yy)[:, 0].exp()
        for j, v in enumerate(var_logits):
            zq = v[s:s + chunk].double().to(ref_logits.device)
            lq = torch.log_softmax(zq, dim=-1)
            terms = torch.sub(lr, lq).mul_(pr)  # in place: the same products, one [chunk, V] temporary fewer
            if not everywhere:
                # 0 * (-inf - -inf) is nan: a token the reference gives no mass contributes nothing.
                terms = torch.where(mass, terms, torch.zeros_like(pr))
            k = terms.sum(dim=-1).clamp_min(0.0)  # Gibbs: what is left below 0 is float64 rounding
            k = torch.where((zr == zq).all(dim=-1), torch.zeros_like(k), k)  # equal logits: exactly 0
            kl[j].append(k)
            same[j].append(top_r == torch.argmax(zq, dim=-1))
            dp[j].append(lq.gather(1, yy)[:, 0].exp() - p_ref_y)
    return [StepDivergence(torch.cat(kl[j]).cpu().numpy(), torch.cat(same[j]).cpu().numpy(),
                           torch.cat(dp[j]).cpu().numpy()) for j in range(len(var_logits))]


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


def _slides(model) -> bool:
    """Whether any attention layer of ``model`` attends within a sliding window (transformers sets the layer's
    ``sliding_window`` then)."""
    return any(getattr(m, "sliding_window", None) for m in model.modules())


def _logits(model, batch, rows: bool):
    from harness.decode.probe import shared_prefix, step_logits_batch, step_logits_rows

    if rows:
        return step_logits_rows(model, batch, prefix=shared_prefix(batch) if rows == "prefix" else 0)
    return list(step_logits_batch(model, batch))


def teacher_forced_rows(ref_model, var_model, items: Sequence[tuple[str, Sequence[int], Sequence[int]]],
                        lengths: Sequence[int], progress=None, batching: str = "rows") -> list[dict[str, object]]:
    """One row per (prompt key, length), in ``items`` order: ``items`` are (prompt key, prompt ids, the reference's
    tokens). ``progress`` (a tqdm-like) advances per item. One variant of :func:`teacher_forced_many`."""
    return teacher_forced_many(ref_model, {"q": var_model}, items, lengths, progress, batching)["q"]


def teacher_forced_many(ref_model, var_models: Mapping[str, object],
                        items: Sequence[tuple[str, Sequence[int], Sequence[int]]], lengths: Sequence[int],
                        progress=None, batching: str = "rows", clock: dict | None = None
                        ) -> dict[str, list[dict[str, object]]]:
    """Per variant name, :func:`teacher_forced_rows` of every variant model in ``var_models`` against the one
    reference: each forward chunk of items reads the reference once and then every variant (issue 30: the
    reference's forward was paid once per variant), and the reference's side of the KL once
    (:func:`step_divergences`).

    ``batching``: "rows" packs outputs of any lengths into one forward per model (harness.decode.probe.step_logits_rows,
    grouped by :func:`harness.decode.probe.rows_chunks`), the positions every item of a forward shares at its front
    computed once (``prefix``, :func:`harness.decode.probe.shared_prefix`); "rows-full" the same without the shared
    prefix (every position of every row in one forward, TF_VERSION 2's path); "shape" shares a forward only among
    outputs of one shape (the fallback where a model cannot run rows batching, chosen here on its first forward);
    "single" runs one output per forward (the unbatched path the tests compare with).

    ``clock``: where given, process CPU seconds are added to it under "reference", each variant's name (their
    forwards) and "kl" (the divergences of all variants): the benchmark's profile.
    """
    import time

    from harness.decode.probe import rows_chunks, shared_prefix
    from harness.decode.rows import RowsUnsupported

    if batching not in ("rows", "rows-full", "shape", "single"):
        raise ValueError(f"batching {batching!r}: rows, rows-full, shape or single")
    mode: object = {"rows": "prefix", "rows-full": True}.get(batching, False)
    names = list(var_models)
    models = [ref_model, *var_models.values()]
    if mode == "prefix" and any(_slides(m) for m in models):
        mode = True  # a sliding-window layer's cache may not hold the prefix: every position in the rows' forward
    if mode:
        # chunked on the positions after the prefix all items share: the padding a forward may add is a share of
        # the positions it computes
        p0 = shared_prefix([(p, t) for _, p, t in items]) if mode == "prefix" else 0
        shapes = [(len(p) + len(t) - 1 - p0, len(t)) for _, p, t in items]
        groups = rows_chunks(shapes, max(_vocab(m) for m in models))
    else:
        groups = _batches(items) if batching == "shape" else [[i] for i in range(len(items))]
    by_item: dict[int, dict[str, list[dict[str, object]]]] = {}
    for n, idx in enumerate(groups):
        batch = [(items[i][1], items[i][2]) for i in idx]
        try:
            out = []
            for name, m in zip(["reference", *names], models):
                t = time.process_time()
                out.append(_logits(m, batch, mode))
                if clock is not None:
                    clock[name] = clock.get(name, 0.0) + time.process_time() - t
            ref, *var = out
        except RowsUnsupported:
            if mode == "prefix":  # e.g. a sliding-window layer _slides did not see: the same, without the prefix
                return teacher_forced_many(ref_model, var_models, items, lengths, progress, "rows-full", clock)
            if n:  # a model runs every forward the same way: only the first can find it cannot
                raise
            return teacher_forced_many(ref_model, var_models, items, lengths, progress, batching="shape", clock=clock)
        t = time.process_time()
        for b, i in enumerate(idx):
            key, _, tokens = items[i]
            ds = step_divergences(ref[b], [v[b] for v in var], tokens)
            by_item[i] = {name: [{"prompt_key": key, "length": int(L), **summarize(d, L)} for L in lengths]
                          for name, d in zip(names, ds)}
        if clock is not None:
            clock["kl"] = clock.get("kl", 0.0) + time.process_time() - t
        del ref, var, out
        if progress is not None:
            progress.update(len(idx))
    return {name: [row for i in range(len(items)) for row in by_item[i][name]] for name in names}
