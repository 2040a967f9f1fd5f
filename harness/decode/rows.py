"""Mixed-length batches with no padding inside any reduction ("rows" batching), and the greedy loop that drives them.

Why: exact-length buckets (``bucket`` batching) keep padding out of the
attention reductions, but a ladder's prompts have many lengths, so its
batches were small (174 prompts of 11 lengths made 21 batches, 8 rows each)
and a step's fixed cost (the model's Python, the output head's weight
packing) was paid once per handful of rows. At a real vocabulary that made
the harness slower than plain batched ``generate``.

How: prompts of any lengths share a batch, left-aligned to the right edge as
``generate`` pads them, but the attention of each group of equal-length rows
runs on that group's own positions only, through the model's own attention
function (its ``eager_attention_forward``, or transformers' SDPA one) and the
mask an unpadded batch would get. No padded key or query ever enters a
softmax sum or a weighted sum of values, so every row computes what it would
compute alone; everything else in a decoder layer (norms, projections, MLP,
output head) works row by row already. Measured on Qwen3 and Llama shaped
random-init models and the demo models: tokens, post-norm states, top-2
logits and the prompt-end row are bitwise equal to ``bucket`` batching (the
tests hold this). Rows that choose an end token leave the batch (their cache
rows are dropped), except that a batch never shrinks to one row (the M = 1
matmul path rounds differently, see harness.decode.greedy).

The loop calls the model's own forward with the arguments ``generate`` uses
(cache, position ids, ``logits_to_keep=1``) and takes the argmax as
``generate`` does (the first maximal index of the float32 scores), once:
the top-2 pass that records the rival gives the chosen token too.

Architectures whose layers are not all attention layers that pass keyword
arguments through (hybrid linear-attention models, custom code) raise
:class:`RowsUnsupported` on their first batch; the caller decodes that cell
with ``bucket`` batching and records why.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

ROWS_ATTENTION = "stabprobe_rows"
"""The name the per-group attention is registered under in transformers' AttentionInterface."""


class RowsUnsupported(RuntimeError):
    """The model cannot run mixed-length batches this way (the message says why)."""


@dataclass
class _RowsState:
    """Passed to every attention call of one forward (as the ``stabprobe_rows`` keyword argument)."""

    lens: list[int]
    """Per batch row: tokens of that row's sequence including those of this forward (its valid keys)."""
    inner: str
    """The model's own attention implementation: 'eager' or 'sdpa'."""
    seen: set[int] = field(default_factory=set)
    """ids of the attention modules called during this forward (every layer must be)."""
    groups: dict = field(default_factory=dict)
    """(q_len, kv_len) -> [((first query, first key), row index or None for all rows)], built once per forward."""
    prefix: int = 0
    """Positions at the front of the cache shared by every row (a shared prompt prefix computed once,
    harness.decode.probe.step_logits_rows): each row's keys are these and then its own last ``lens`` positions,
    with the left padding of this forward in between. ``lens`` then counts only the positions after the prefix."""

    def plan(self, q_len: int, kv_len: int, device):
        key = (q_len, kv_len)
        if key not in self.groups:
            import torch

            by: dict[tuple[int, int], list[int]] = {}
            for b, n in enumerate(self.lens):
                # a sliding layer's cache may hold fewer positions than the row has: its valid keys are the newest ones
                by.setdefault((q_len - min(n, q_len), kv_len - min(n, kv_len)), []).append(b)
            whole = len(by) == 1
            self.groups[key] = [(start, None if whole else torch.tensor(rows, device=device)) for start, rows in by.items()]
        return self.groups[key]


def _group_mask(inner: str, nq: int, nk: int, window: int | None, dtype, device):
    """The mask an unpadded batch of this group would get: causal (queries are the last ``nq`` of ``nk`` positions),
    within ``window`` when the layer slides; None where every key is allowed, as transformers passes it then."""
    import torch

    if nq == 1 and (window is None or nk <= window):
        return None  # a decode step sees every key (transformers passes no mask then either)
    qpos = torch.arange(nk - nq, nk, device=device)[:, None]
    kpos = torch.arange(nk, device=device)[None, :]
    allowed = kpos <= qpos
    if window is not None:
        allowed &= (qpos - kpos) < window
    if bool(allowed.all()):
        return None
    if inner == "sdpa":
        # SDPA's is_causal covers a square causal block (transformers passes no mask then)
        return None if nq == nk and (window is None or nk <= window) else allowed[None, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


ONEDNN_MIN_VOLUME = 16 * 16 * 16
"""torch's CPU ``bmm`` runs a bf16 product on oneDNN only when batch x M x K x N exceeds this (ATen's
``mkldnn_gemm_min_size``, aten/src/ATen/native/mkldnn/Matmul.cpp), else on its own gemm, which rounds differently."""


def _group_pad(rows: int, heads: int, q_len: int, kv_len: int, head_dim: int) -> int:
    """Zero rows to add to a group so that its attention products are as large as ``ONEDNN_MIN_VOLUME`` and more.

    Why: a group's products are batched over rows x heads, so whether they run on oneDNN depended on how many
    rows of one length the batch held, and the two kernels round apart. Measured on tiny-chat (4 heads of 32,
    torch 2.13, AVX-512 bf16 Xeon, one thread): a 21-token prompt alone in its group at 26 keys (4 x 1 x 32 x 26
    = 3,328 products: ATen's gemm) scored 0.000244 apart in q.k from the same row in a group of 12 (oneDNN), and
    its identical-rung copy drifted (hidden_dist 6.5e-7, same tokens). Past the threshold every group runs on
    oneDNN, whose per-row result did not depend on the group's size (1 to 48 rows tested); padding rows are zeros
    that no kept row reads. Where bf16 never runs on oneDNN (no AVX-512) the padding changes nothing.
    """
    per_row = heads * q_len * kv_len * head_dim
    need = ONEDNN_MIN_VOLUME // per_row + 1
    return max(0, need - rows)


def _rows_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    stabprobe_rows: _RowsState | None = None, **kwargs):
    """Attention over each equal-length group's own positions (query [B, H, q, D], key/value [B, Hkv, kv, D])."""
    import torch

    state = stabprobe_rows
    if state is None:
        raise RowsUnsupported(f"{type(module).__name__} does not pass keyword arguments to its attention function")
    state.seen.add(id(module))
    if state.inner == "eager":
        inner = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if inner is None:
            raise RowsUnsupported(f"{type(module).__module__} has no eager_attention_forward")
    else:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward as inner
    B, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    window = kwargs.get("sliding_window")
    P = state.prefix
    if P and window is not None:
        raise RowsUnsupported("a shared prefix with a sliding-window layer (its cache may not hold the prefix)")
    out = None
    for (q0, k0), rows in state.plan(q_len, kv_len - P, query.device):
        if rows is None:  # one group: every row has the same length
            qg, kg, vg = query[:, :, q0:, :], key[:, :, k0:, :], value[:, :, k0:, :]
        else:
            qg, kg, vg = query[rows, :, q0:, :], key[rows, :, k0:, :], value[rows, :, k0:, :]
        if P and k0:  # the shared prefix, then the group's own positions: the padding between is skipped
            sel = slice(None) if rows is None else rows
            kg = torch.cat([key[sel, :, :P, :], key[sel, :, P + k0:, :]], dim=2)
            vg = torch.cat([value[sel, :, :P, :], value[sel, :, P + k0:, :]], dim=2)
        n = qg.shape[0]
        pad = _group_pad(n, qg.shape[1], qg.shape[2], kg.shape[2], min(qg.shape[3], vg.shape[3]))
        if pad:
            qg, kg, vg = (torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))]) for x in (qg, kg, vg))
        mask = _group_mask(state.inner, qg.shape[2], kg.shape[2], window, query.dtype, query.device)
        o, _ = inner(module, qg, kg, vg, mask, dropout=dropout, scaling=scaling, **kwargs)  # [n, q, H, Dv]
        o = o[:n]  # zero rows added by _group_pad: their outputs are dropped
        if rows is None and q0 == 0:
            return o, None
        if out is None:
            # padded query positions read nothing; their outputs are zeros and never reach a kept row
            out = o.new_zeros((B, q_len) + tuple(o.shape[2:]))
        out[slice(None) if rows is None else rows, q0:] = o
    return out, None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ROWS_ATTENTION, _rows_attention)


@contextmanager
def rows_attention(model):
    """Switch ``model`` to the per-group attention for the duration (restored after, also on error)."""
    _register()
    inner = getattr(model.config, "_attn_implementation", None)
    if inner not in ("eager", "sdpa"):
        raise RowsUnsupported(f"attention implementation {inner!r} (rows batching wraps 'eager' or 'sdpa')")
    model.set_attn_implementation(ROWS_ATTENTION)
    try:
        yield inner
    finally:
        model.set_attn_implementation(inner)


@dataclass
class RawRow:
    """One request's readings from the greedy loop (arrays over its steps, the end-token step included)."""

    chosen: list[int] = field(default_factory=list)
    top_vals: list[np.ndarray] = field(default_factory=list)
    top_ids: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    first_logprobs: np.ndarray | None = None


def _cache_kwarg(model) -> str:
    # transformers 5.23 renamed past_key_values to cache (the old name warns); 5.19 (the vLLM environment) has only the old
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _attention_layers(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(cfg, "num_hidden_layers", 0))


PREFILL_PAD_SHARE = 0.125
"""Padding a prefill forward may add, as a share of its real tokens, before the next length starts a new forward."""


def prefill_chunks(lens: Sequence[int]) -> list[list[int]]:
    """Batch rows grouped into prefill forwards: neighbouring lengths share one while its padding stays within
    ``PREFILL_PAD_SHARE`` of its tokens; a forward never has one row (the output head's M = 1 path rounds apart).

    Why: a prefill costs every position of every row, padding included, through every layer. At hidden 1,024 a
    batch of 48 ladder prompts of 12-22 tokens padded to 22 spent 3.2 s in prefill against 2.2 s for its real
    tokens; the decode steps after it cost one position per row whatever the padding.
    """
    order = sorted(range(len(lens)), key=lambda b: (lens[b], b))
    chunks: list[list[int]] = []
    for b in order:
        cur = chunks[-1] if chunks else None
        if cur is not None:
            real = sum(lens[r] for r in cur) + lens[b]
            if lens[b] * (len(cur) + 1) - real <= PREFILL_PAD_SHARE * real:
                cur.append(b)
                continue
        chunks.append([b])
    merged: list[list[int]] = []
    for c in chunks:
        if merged and (len(c) == 1 or len(merged[-1]) == 1):
            merged[-1] += c
        else:
            merged.append(c)
    return merged


def _prefill(model, token_lists, chunk: list[int], pad_id: int, inner: str, cache_kw: str, device):
    """One prefill forward over ``chunk`` (left-padded to its longest): (logits [k, V], its cache)."""
    import torch
    from transformers import DynamicCache

    lens = [len(token_lists[b]) for b in chunk]
    width = max(lens)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    for i, b in enumerate(chunk):
        ids[i, width - lens[i]:] = torch.tensor(list(token_lists[b]), dtype=torch.long)
    # positions count from each row's first real token, as generate derives them from the attention mask
    pos = (torch.arange(width)[None, :] - torch.tensor([width - n for n in lens])[:, None]).clamp_min(0)
    cache = DynamicCache(config=model.config)
    state = _RowsState(lens=lens, inner=inner)
    out = model(input_ids=ids.to(device), position_ids=pos.to(device), use_cache=True, logits_to_keep=1,
                stabprobe_rows=state, **{cache_kw: cache})
    layers = _attention_layers(model)
    if len(state.seen) != layers:
        raise RowsUnsupported(f"{len(state.seen)} of {layers} layers ran the per-group attention "
                              "(a layer without attention, or one that drops keyword arguments)")
    return out.logits[:, -1, :], cache


def _merge_caches(model, parts: list[tuple[list[int], object]], rows: int):
    """One cache for the whole batch from the prefill forwards' caches, each row's positions right-aligned (the
    left padding in between is zeros that no attention reads: harness.decode.rows attends to a row's own keys)."""
    from transformers import DynamicCache

    merged = DynamicCache(config=model.config)
    for layer in range(len(parts[0][1].layers)):
        kv = [(idx, c.layers[layer].keys, c.layers[layer].values) for idx, c in parts]
        width = max(k.shape[-2] for _, k, _ in kv)
        k0, v0 = kv[0][1], kv[0][2]
        keys = k0.new_zeros((rows, k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((rows, v0.shape[1], width, v0.shape[3]))
        for idx, k, v in kv:
            keys[idx, :, width - k.shape[-2]:, :] = k
            values[idx, :, width - v.shape[-2]:, :] = v
        merged.update(keys, values, layer)
    return merged


def greedy_rows(loaded, token_lists: Sequence[Sequence[int]], max_new_tokens: int):
    """Greedy decode of mixed-length prompts in one batch; returns (rows, first step's states, first step's scores).

    ``token_lists`` has at least two rows (callers add a discarded copy to a lone
    request). The first step's states [B, d] and float32 scores [B, V] are what
    the closed-form head is checked against.
    """
    import torch

    from harness.decode.recorder import final_states, top2_cpu

    model, info = loaded.model, loaded.info
    device = next(model.parameters()).device
    B = len(token_lists)
    if B < 2:
        raise ValueError("greedy_rows needs at least two rows (the M = 1 matmul path rounds differently)")
    lens = [len(x) for x in token_lists]
    eos = set(info.eos_token_ids)
    cache_kw = _cache_kwarg(model)
    rows = [RawRow() for _ in range(B)]
    active = list(range(B))  # original row of each batch row
    live = [True] * B  # per batch row: still decoding (False: an ended row kept as the companion of a lone one)
    h0 = scores0 = buf = cache = None
    with rows_attention(model) as inner, final_states(model) as states, torch.inference_mode():
        for t in range(max_new_tokens):
            if t == 0:
                chunks = prefill_chunks(lens)
                parts, pieces, hs = [], [], []
                for chunk in chunks:
                    logits_c, cache_c = _prefill(model, token_lists, chunk, info.pad_token_id, inner, cache_kw, device)
                    parts.append((chunk, cache_c))
                    pieces.append(logits_c)
                    hs.append(states.pop())
                order = torch.tensor([b for c in chunks for b in c])
                logits = torch.empty((B, pieces[0].shape[-1]), dtype=pieces[0].dtype, device=pieces[0].device)
                logits[order.to(logits.device)] = torch.cat(pieces)
                hb = torch.empty((B, hs[0].shape[-1]), dtype=hs[0].dtype)
                hb[order] = torch.cat(hs)
                states.append(hb)
                # a lone forward in batch order keeps its cache; otherwise rows are put back in batch order
                cache = parts[0][1] if chunks == [list(range(B))] else _merge_caches(model, parts, B)
                del parts, pieces
            else:
                state = _RowsState(lens=list(lens), inner=inner)
                out = model(input_ids=cur, position_ids=pos, use_cache=True, logits_to_keep=1, stabprobe_rows=state,
                            **{cache_kw: cache})
                logits = out.logits[:, -1, :]
            # generate's cast: a float32 copy of the last position's logits, the scores greedy takes its argmax over
            # (into one buffer per batch: a fresh [B, V] float32 array per step cost page faults, ~40% of the cast)
            if buf is None:
                buf = torch.empty(logits.shape, dtype=torch.float32)
            scores = buf[: logits.shape[0]]
            scores.copy_(logits)
            h = states.pop().numpy()
            states.clear()
            vals, tops = top2_cpu(scores)
            vals_np, tops_np = vals.numpy(), tops.numpy()
            if t == 0:
                h0, scores0 = torch.from_numpy(h.copy()), scores.clone()
                first = torch.log_softmax(scores, dim=-1).numpy()  # log_softmax, not log(softmax): tails underflow
            ended = []
            for k, r in enumerate(active):
                if not live[k]:
                    continue
                row = rows[r]
                tok = int(tops_np[k, 0])
                row.chosen.append(tok)
                row.top_vals.append(vals_np[k])
                row.top_ids.append(tops_np[k])
                row.states.append(h[k])
                if t == 0:
                    row.first_logprobs = first[k]
                if tok in eos:
                    ended.append(k)
            if t == max_new_tokens - 1:
                break
            for k in ended:
                live[k] = False
            keep = [k for k in range(len(active)) if live[k]]
            if not keep:
                break
            if len(keep) < len(active):
                if len(keep) == 1:  # never one row: keep an ended row beside it, its readings unrecorded
                    keep.append(next(k for k in range(len(active)) if not live[k]))
                    keep.sort()
                cache.batch_select_indices(torch.tensor(keep, device=device))
                active = [active[k] for k in keep]
                live = [live[k] for k in keep]
                lens = [lens[k] for k in keep]
                tops_np = tops_np[keep]
            nxt = torch.from_numpy(np.ascontiguousarray(tops_np[:, 0]))
            cur = nxt[:, None].to(device)
            pos = torch.tensor(lens, device=device)[:, None]  # the new token's position: the row's length before it
            lens = [n + 1 for n in lens]
    return rows, h0, scores0
