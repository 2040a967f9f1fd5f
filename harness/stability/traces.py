"""Per-step stability traces for the decoder, and the "boundary beats bulk" statistic.

The decoder calls :func:`step_stability` on the captured post-norm states of
the steps it evaluates (harness.decode.traces: by default in a run, side A's
first divergence of every pair); the cost is four O(Vd) mat-vecs per state,
no Jacobian, in chunks of :data:`CHUNK_ROWS` states.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from harness.stability.closed_form import head_state, local_stability
from harness.stability.head import HeadSpec


CHUNK_ROWS = 32
"""States per evaluation: every intermediate is [rows, V] float32 (19 MB per tensor at V = 151,936 for 32
rows); one call over a whole batch x steps (1,024 rows) held ~6 GB and spent most of its time in page faults."""


def step_stability(h: torch.Tensor, head: HeadSpec, row_norms_sq: torch.Tensor,
                   chunk: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
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
    norms = row_norms_sq.to(device=head.device, dtype=head.dtype)
    parts = [_step_chunk(h[i : i + chunk], head, norms) for i in range(0, int(h.shape[0]), max(1, int(chunk)))]
    if not parts:
        return {k: np.zeros(0, np.int64 if k in ("top1_id", "rival_id") else np.float32) for k in _KEYS}
    return {k: np.concatenate([p[k] for p in parts]) for k in _KEYS}


_KEYS = ("top1_id", "top1_prob", "margin", "v_eff", "entropy", "delta_tcb", "flip_radius", "rival_id")


def _step_chunk(h: torch.Tensor, head: HeadSpec, norms: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        state = head_state(h, head)
        st = local_stability(state, head, norms)
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
