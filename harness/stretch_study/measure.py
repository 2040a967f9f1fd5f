"""What the stretch and floor studies measure on one loaded model (torch modules in, numbers out).

Every function takes one sequence at a time (no padding, no batch
companions), so a number never depends on what else was computed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from harness.stretch.blocks import BlockStack, capture
from harness.stretch.power import top_singular_value


def _ids(ids: Sequence[int], model) -> torch.Tensor:
    return torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)


def prompt_end_states(model, ids: Sequence[int]) -> np.ndarray:
    """[L + 2, d] float64: h_0 .. h_L and the final-norm state at the prompt end."""
    return capture(model, _ids(ids, model)).states[:, -1].double().cpu().numpy()


def map_names(n_blocks: int) -> list[str]:
    return [f"block_{l}" for l in range(1, n_blocks + 1)] + ["final_norm", "product", "product_norm"]


def stretching(model, ids: Sequence[int], tol: float, max_iter: int, seed: int = 0) -> list[dict[str, Any]]:
    """σ_max of every block map at the prompt end, of the final norm, and of the end-to-end products.

    ``product`` is h_0[T] -> h_L[T] (J_L ⋯ J_1), ``product_norm`` adds the
    final norm (h_0[T] -> the state the head reads). ``sigma_rel`` =
    σ · ‖x‖ / ‖f(x)‖ bounds how much a *relative* perturbation grows
    (‖δf‖/‖f‖ ≤ σ_rel ‖δx‖/‖x‖ to first order): blocks whose output norm is
    much larger than their input (block 1 on small embeddings) have large σ
    and modest σ_rel. ``sigma_bound`` is the product of the per-block σ (an
    upper bound of the product's σ: a check that can fail).
    """
    model.requires_grad_(False)  # only the input is differentiated
    st: BlockStack = capture(model, _ids(ids, model))
    L = st.n_blocks
    x_last = st.states[:, -1]
    rows = []
    spans = [(f"block_{l}", st.block_map(l), l - 1, l) for l in range(1, L + 1)]
    spans += [("final_norm", st.norm_map(), L, L + 1), ("product", st.chain(), 0, L), ("product_norm", st.chain(with_norm=True), 0, L + 1)]
    for name, f, i, o in spans:
        r = top_singular_value(f, x_last[i], tol=tol, max_iter=max_iter, seed=seed)
        n_in, n_out = float(x_last[i].norm()), float(x_last[o].norm())
        rows.append({"map": name, "layer_in": i, "layer_out": o, "sigma": r.sigma,
                     "sigma_rel": r.sigma * n_in / n_out if n_out > 0 else float("nan"),
                     "norm_in": n_in, "norm_out": n_out, "iterations": r.iterations, "converged": r.converged,
                     "residual": r.residual, "tol": r.tol, "max_iter": r.max_iter, "jv_mode": r.jv_mode})
    bound = float(np.prod([r["sigma"] for r in rows[:L]]))
    for r in rows:
        r["sigma_bound"] = bound if r["map"] == "product" else float("nan")
    return rows


def greedy(model, ids: Sequence[int], max_new_tokens: int, eos: Sequence[int]) -> list[int]:
    """Greedy continuation of one prompt (stops after an EOS id, which is kept)."""
    from transformers import GenerationConfig

    if max_new_tokens <= 0:
        return []
    # A fresh config: a model's shipped sampling or repetition settings never apply.
    cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                           eos_token_id=list(eos) if eos else None, pad_token_id=(list(eos) or [0])[0],
                           repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True)
    x = _ids(ids, model)
    with torch.no_grad():  # not inference_mode: optimum-quanto's modules refuse inference tensors
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=cfg)
    return [int(t) for t in out[0, x.shape[1]:].tolist()]


def teacher_forced(model, prompt: Sequence[int], continuation: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities [n + 1, V] and final-norm states [n + 1, d] at the prompt end and after each continuation token.

    Row ``t`` predicts continuation token ``t`` (row ``n`` the one after the last).
    """
    seq = list(prompt) + list(continuation)
    st = capture(model, _ids(seq, model))
    start = len(prompt) - 1
    logp = torch.log_softmax(st.logits[start:].float(), dim=-1).double().cpu().numpy()
    return logp, st.states[-1, start:].double().cpu().numpy()


def margins(logp: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 log-probability per row (equal to the logit margin: the log-sum-exp cancels)."""
    top2 = np.sort(logp, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def kl_rows(logp_p: np.ndarray, logp_q: np.ndarray) -> np.ndarray:
    """KL(p_t ‖ q_t) per row, in nats, from log-probabilities (never from underflowed probabilities)."""
    p = np.exp(logp_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (logp_p - logp_q), 0.0)
    return terms.sum(axis=1)
