"""Per-step stability traces for the decoder, and the "boundary beats bulk" statistic.

The decoder calls :func:`step_stability` once per generation step on the
batch of captured post-norm states (its output-embedding hook already holds
them); the cost is four O(BVd) mat-vecs per step, no Jacobian.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from harness.stability.closed_form import head_state, local_stability
from harness.stability.head import HeadSpec


def step_stability(h: torch.Tensor, head: HeadSpec, row_norms_sq: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row stability of one decode step.

    ``h`` [B, d] float32 (the output-embedding input at the last position),
    ``head`` from :func:`harness.stability.head.head_from_model` and
    ``row_norms_sq`` from :func:`harness.stability.head.row_norms_sq` (both
    computed once per model). Returns float32/int64 arrays of length B:
    ``top1_id``, ``top1_prob``, ``margin`` (post-map logits, as the decoder
    traces them), ``v_eff``, ``entropy``, ``delta_tcb`` (ε = 1),
    ``flip_radius`` and ``rival_id``.
    """
    if h.ndim != 2 or h.shape[1] != head.hidden_size:
        raise ValueError(f"h must be [B, {head.hidden_size}], got {tuple(h.shape)}")
    with torch.no_grad():
        state = head_state(h, head)
        st = local_stability(state, head, row_norms_sq.to(device=head.device, dtype=head.dtype))
    f32 = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    return {
        "top1_id": st.top1_id.cpu().numpy().astype(np.int64),
        "top1_prob": f32(st.top1_prob),
        "margin": f32(st.margin),
        "v_eff": f32(st.v_eff),
        "entropy": f32(st.entropy),
        "delta_tcb": f32(st.delta_tcb(1.0)),
        "flip_radius": f32(st.flip_radius),
        "rival_id": st.rival_id.cpu().numpy().astype(np.int64),
    }


def first_divergence_margin_percentile(trace_margin_a: Sequence[float] | np.ndarray, first_div_step: int) -> float:
    """Percentile (0–100) of output A's margin at the first-divergence step within A's own trace.

    ``first_div_step`` is 1-based, as ``harness.score.metrics.edit_distance.first_divergence``
    returns it (0 = no divergence); the trace holds one margin per step, the
    EOS-choosing step included. Ties count half ("mean" percentile), so a
    constant trace gives 50. NaN when there is no divergence, the step lies
    beyond the trace, or the margin there is not finite. A low percentile
    means the outputs split where A was least decided: boundary beats bulk.
    """
    m = np.asarray(trace_margin_a, dtype=np.float64).ravel()
    t = int(first_div_step)
    if t <= 0 or t > m.size:
        return math.nan
    x = m[t - 1]
    ok = m[np.isfinite(m)]
    if not math.isfinite(x) or ok.size == 0:
        return math.nan
    below = float(np.count_nonzero(ok < x))
    equal = float(np.count_nonzero(ok == x))
    return 100.0 * (below + 0.5 * equal) / ok.size
