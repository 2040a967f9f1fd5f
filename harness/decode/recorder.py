"""What greedy decoding records per step: a logits processor over the scores greedy takes its argmax over, and a
hook on the output embedding's input (used by both decode loops, harness.decode.greedy and harness.decode.rows)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np


@contextmanager
def final_states(model):
    """Collects, per forward pass, the last position's input to the output embedding (post-final-norm ``h``, float32, CPU)."""
    states: list = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, inp, out: states.append(inp[0][:, -1, :].float().cpu()))
    try:
        yield states
    finally:
        hook.remove()


class StepRecorder:
    """Logits processor: keeps top-2 per step and the full distribution of step 0."""

    def __init__(self) -> None:
        self.top_vals: list = []
        self.top_ids: list = []
        self.first_logprobs = None
        self.first_scores = None

    def __call__(self, input_ids, scores):
        import torch

        s = scores.float()
        if s.device.type == "cpu" and s.is_contiguous():
            v, i = top2_cpu(s)
        else:
            v, i = torch.topk(s, 2, dim=-1)
        self.top_vals.append(v.cpu())
        self.top_ids.append(i.cpu())
        if self.first_logprobs is None:
            # log_softmax, not log(softmax): tail probabilities underflow in float32.
            self.first_logprobs = torch.log_softmax(s, dim=-1).cpu()
            self.first_scores = s.cpu()  # what the closed-form head is checked against (once per cell)
        return scores


def top2_cpu(s):
    """Top-2 values and ids per row of a CPU float32 [B, V] tensor, as two argmax passes (numpy's SIMD reductions).

    ``torch.topk(k=2)`` took 28 ms per step for 16 rows at V = 151,936 on one
    thread (numpy: 3.7 ms), more than the bf16 lm_head of a small model. The
    first id is the first maximal index, as greedy's ``torch.argmax`` takes it;
    the second is the best entry after masking the first (the next index of an
    exact tie). ``s`` is restored before returning.
    """
    import torch

    a = s.numpy()
    rows = np.arange(a.shape[0])
    i1 = a.argmax(axis=1)
    v1 = a[rows, i1].copy()
    a[rows, i1] = -np.inf
    try:
        i2 = a.argmax(axis=1)
        v2 = a[rows, i2].copy()
    finally:
        a[rows, i1] = v1
    return torch.from_numpy(np.stack([v1, v2], 1)), torch.from_numpy(np.stack([i1, i2], 1).astype(np.int64))
