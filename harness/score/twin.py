"""Teacher-forced twin divergence: one output read by the same model after both prompts of a pair.

Free-running distances (harness.score.pair_metrics) compare two greedy outputs, and after the first token where
they part the autoregressive amplifier makes them differ whatever the model believes next. Here the model is fed
one output -- side A's greedy tokens ``y`` -- once after prompt A and once after prompt B (one teacher-forced pass
each, harness.decode.probe.step_logits_batch), and the two readings are compared position by position
(README, "Teacher-forced twin divergence"). At generated step t, with ``p_A,t`` and ``p_B,t`` the
next-token distributions after (prompt A, y[:t]) and (prompt B, y[:t]):

- ``KL_t = KL(p_A,t || p_B,t)`` in nats, in float64 from both float32 logit rows; exactly 0 where the rows are
  equal;
- same top-1: ``argmax p_A,t == argmax p_B,t`` (first index among exact ties, as greedy takes it);
- ``llr_t = log p_B,t(y_t) - log p_A,t(y_t)``: POSIX's log-likelihood ratio of A's output under B against under A.

The other direction reads side B's output the same way (``KL(p_B || p_A)``, ``log p_A(y_B) - log p_B(y_B)``).
Per pair, direction and length L (the first min(L, steps) positions): the mean and the max of KL_t, whether any
top-1 differs and the first 1-based step where one does (NaN when none does: never 0), and the LLR summed and
per token. Both passes of a pair see the same number of steps, so the identical rung (prompt B = prompt A) reads
the same input twice; :func:`plan_batches` puts such copies in one forward, where every row of equal input is
computed alike, so they are bitwise equal and every value is exactly 0 (tests/score/test_twin.py).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from harness.score.records import TwinPass, TwinSteps

TWIN_VERSION = "1"
"""Bumped when a value changes: part of the twin cache key (harness.run.twin)."""
LOGIT_BUDGET = 1 << 25
"""float32 logits one forward may return (batch x steps x V): 128 MB (16 rows of 64 steps at Qwen3's 151,936, 42
rows of 32 steps at SmolLM2's 49,152)."""
CHUNK = 64
"""Positions reduced at once: bounds the float64 temporaries at CHUNK x V per side."""


def twin_steps(own_logits, other_logits, tokens: Sequence[int], chunk: int = CHUNK) -> TwinSteps:
    """KL(own || other), same top-1 and the LLR per step from two [steps, V] float32 logit tensors (torch).

    ``own``: the output read after its own prompt; ``other``: after the pair's other prompt; ``tokens``: the output.
    """
    import torch

    if own_logits.shape != other_logits.shape or own_logits.shape[0] != len(tokens):
        raise ValueError(f"logits {tuple(own_logits.shape)} / {tuple(other_logits.shape)} for {len(tokens)} tokens")
    y = torch.as_tensor(list(tokens), dtype=torch.long, device=own_logits.device)
    kl, same, llr = [], [], []
    for s in range(0, len(tokens), chunk):
        zo, zt = own_logits[s:s + chunk], other_logits[s:s + chunk].to(own_logits.device)
        o64, t64 = zo.double(), zt.double()
        lse_o, lse_t = torch.logsumexp(o64, dim=-1), torch.logsumexp(t64, dim=-1)
        po = torch.exp(o64 - lse_o[:, None])
        # sum_v p_o (log p_o - log p_t) = sum_v p_o (z_o - z_t) - (lse_o - lse_t), as sum p_o = 1: one dot product
        # instead of two log-softmax rows (1.8x faster at V = 49,152, the same values to 1e-12 relative)
        k = torch.linalg.vecdot(po, o64 - t64) - (lse_o - lse_t)
        bad = torch.isnan(k)
        if bool(bad.any()):  # -inf logits (masked tokens): 0 * (-inf - -inf) is nan; no mass, no contribution
            lo, lt = torch.log_softmax(o64[bad], dim=-1), torch.log_softmax(t64[bad], dim=-1)
            k[bad] = torch.where(lo.exp() > 0, lo.exp() * (lo - lt), torch.zeros_like(lo)).sum(dim=-1)
        k = k.clamp_min(0.0)  # Gibbs: >= 0; what is left below 0 is float64 rounding
        k = torch.where((zo == zt).all(dim=-1), torch.zeros_like(k), k)  # equal rows: exactly 0, not rounding
        kl.append(k)
        same.append(torch.argmax(zo, dim=-1) == torch.argmax(zt, dim=-1))
        yy = y[s:s + chunk, None]
        llr.append((t64.gather(1, yy)[:, 0] - lse_t) - (o64.gather(1, yy)[:, 0] - lse_o))
    return TwinSteps(torch.cat(kl).cpu().numpy(), torch.cat(same).cpu().numpy(), torch.cat(llr).cpu().numpy())


SUMMARY_KEYS = ("kl", "kl_max", "top1_changed", "first_top1", "llr", "llr_tok")
"""What :func:`summarize` returns per direction (the pair metrics ``twin_<key>_ab`` / ``_ba``)."""


def summarize(d: TwinSteps, length: int) -> dict[str, float]:
    """The pair metrics of one direction over the first min(length, steps) positions (NaN everywhere when none)."""
    n = min(int(length), d.kl.size)
    if n == 0:
        return dict.fromkeys(SUMMARY_KEYS, float("nan"))
    kl, same, llr = d.kl[:n], d.same_top1[:n], d.llr[:n]
    differ = np.flatnonzero(~same)
    total = float(llr.sum())
    return {"kl": float(kl.mean()), "kl_max": float(kl.max()), "top1_changed": float(differ.size > 0),
            "first_top1": float(differ[0] + 1) if differ.size else float("nan"),
            "llr": total, "llr_tok": total / n}


def plan_batches(passes: Sequence[TwinPass], vocab: int, budget: int = LOGIT_BUDGET) -> list[list[int]]:
    """Indices of ``passes`` grouped into forwards: one input shape per forward (no padding enters any row), at most
    ``budget`` logits each, and passes with the same input never split across forwards.

    Why keep equal inputs together: the identical rung's two passes are the same input, and a forward computes
    every row of one shape alike, so together they are bitwise equal; apart, in forwards of different sizes, the
    kernels may round them apart (harness.decode.rows._group_pad, harness.decode.invariant).
    """
    groups: dict[tuple[int, int], dict[tuple, list[int]]] = {}
    for i, p in enumerate(passes):
        shape = (len(p.prompt_ids) + len(p.tokens) - 1, len(p.tokens))
        groups.setdefault(shape, {}).setdefault((tuple(p.prompt_ids), tuple(p.tokens)), []).append(i)
    out: list[list[int]] = []
    for (_, steps), same_input in groups.items():
        cap = max(1, budget // max(1, steps * vocab))
        cur: list[int] = []
        for idx in same_input.values():
            if cur and len(cur) + len(idx) > cap:
                out.append(cur)
                cur = []
            cur = cur + idx
        if cur:
            out.append(cur)
    return out


def run_passes(model, passes: Sequence[TwinPass], vocab: int, budget: int = LOGIT_BUDGET
               ) -> Iterator[tuple[list[int], object]]:
    """(indices, float32 logits [batch, steps, V]) of every forward of :func:`plan_batches`, in plan order."""
    from harness.decode.probe import step_logits_batch

    for idx in plan_batches(passes, vocab, budget):
        yield idx, step_logits_batch(model, [(passes[i].prompt_ids, passes[i].tokens) for i in idx])
