"""`stabprobe geometry`: the closed forms checked on real hidden states.

For each model: render every distinct prompt of the ladder, decode greedily
(fp32 by default, so the checks run at full precision) and capture the
post-norm state ``h`` at the prompt end and at every decode step with a
forward hook on the output embedding, as the decoder does. Then:

- the Fisher KL-boundary study (METRICS.md): a direction sweep per position,
  t* against the empirical boundary for each ε, ρ per class (median with a
  position-clustered bootstrap CI), per-position Spearman, isotonic
  calibration (5-fold CV grouped by position), stratification by entropy and
  by effective Fisher rank, and the two-token-regime headline;
- the TCB paper's checks: ‖J‖_F against an autograd Jacobian, the
  cluster/disperse simulation, correlations of δ_TCB with V_eff and margin;
- "boundary beats bulk": for each perturbed pair, the percentile of the
  first-divergence step's margin within output A's own trace.

Writes ``geometry.parquet`` (position × direction × ε), ``geometry_positions.parquet``,
``geometry_pairs.parquet``, ``geometry_summary.json``, ``geometry.md`` and a manifest.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from harness.core import rundir
from harness.errors import EXIT_MODEL_FAILED, EXIT_OK, InputError, error_line
from harness.ladder.records import Ladder
from harness.models.loading import load_model
from harness.run.manifest import base_manifest
from harness.score.metrics.edit_distance import first_divergence
from harness.run.pipeline import RunResult
from harness.models.registry import ModelEntry
from harness.audit.render import render_prompt
from harness.stability.calibration import calibrate, per_position_spearman
from harness.stability.closed_form import (
    empirical_boundary,
    fisher_topk,
    head_state,
    jacobian_fro_sq_moved_rows,
    local_stability,
    quad_form,
    rho,
    t_star,
)
from harness.stability.directions import DirectionSpec, build_directions, stable_seed
from harness.stability.head import HeadMismatch, HeadSpec, check_head, head_from_model, row_norms_sq
from harness.stability.traces import first_divergence_margin_percentile, step_stability

GEOMETRY_PARQUET = "geometry.parquet"
POSITIONS_PARQUET = "geometry_positions.parquet"
PAIRS_PARQUET = "geometry_pairs.parquet"
SUMMARY_JSON = "geometry_summary.json"
REPORT_MD = "geometry.md"
SCHEMA = "stabprobe-geometry/1"

# Two-token regime of the acceptance check: top-2 mass ≥ 0.95, top-1 in [0.5, 0.9].
TWO_TOKEN_MASS = 0.95
TWO_TOKEN_P1 = (0.5, 0.9)
HEADLINE_RANGE = (0.9, 1.15)
CLASS_ORDER = ("eig1", "eig1+", "eig1-", "eig2-7", "eig_pooled", "structured", "random", "tangent", "negative")
"""eig1± : the top eigenvector's two signs apart (+ raises the top token: towards confidence)."""
N_STRATA = 5
N_COMPETITORS = 10  # TCB paper, App. C.4.1
HIGH_VEFF_MIN = 2.0
"""Flat-distribution subset of the correlation table (the paper's broad regime)."""


@dataclass(frozen=True)
class GeometryConfig:
    models: tuple[ModelEntry, ...]
    ladder: Ladder
    out: Path = Path("runs")
    eps: tuple[float, ...] = (0.01, 0.1, 1.0)
    max_new_tokens: int = 32
    max_positions: int | None = None
    """Per model, positions in the direction sweep (deterministic hash order); None = all."""
    k: int = 64
    variant: str = "fp32"
    batch_size: int = 16
    directions: DirectionSpec = field(default_factory=DirectionSpec)
    n_bootstrap: int = 2000
    n_jacobian_checks: int = 5
    low_veff_max: float = 1.5
    """Positions with V_eff at most this form the low-V_eff (high-confidence) subset."""
    argv: tuple[str, ...] = ()
    progress: bool = False
    loader: Callable[[ModelEntry, str], Any] = load_model


# The study ends like a run: where it went, its exit code, its summary, the terminal text.
GeometryResult = RunResult


def validate_geometry_config(cfg: GeometryConfig) -> None:
    if not cfg.eps or any(not (math.isfinite(e) and e > 0) for e in cfg.eps):
        raise InputError("--eps", ",".join(map(str, cfg.eps)), "expected positive finite numbers, e.g. 0.01,0.1,1")
    if cfg.max_new_tokens < 0:
        raise InputError("--max-new-tokens", str(cfg.max_new_tokens), "expected a non-negative integer")
    if cfg.max_positions is not None and cfg.max_positions <= 0:
        raise InputError("--max-positions", str(cfg.max_positions), "expected a positive integer")
    if cfg.k < max(2, cfg.directions.n_structured_top, cfg.directions.n_eig):
        raise InputError("--k", str(cfg.k), f"expected at least {max(2, cfg.directions.n_structured_top, cfg.directions.n_eig)}")
    if not cfg.models:
        raise InputError("--models", "", "no models")


# -- collecting states -----------------------------------------------------


@dataclass(frozen=True)
class PromptTrace:
    key: str
    n_prompt_tokens: int
    gen_ids: tuple[int, ...]
    h: torch.Tensor
    """[steps, d] float32: step 0 is the prompt end; the EOS-choosing step is included."""


def _prompt_key(ids: Sequence[int]) -> str:
    from harness.decode.greedy import prompt_key

    return prompt_key(ids)


def _rendered_prompts(ladder: Ladder, loaded) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, str, str, str]]]:
    """Distinct rendered prompts (key -> ids) and the pairs as (pair_id, rung, key_a, key_b)."""
    prompts: dict[str, tuple[int, ...]] = {}
    pairs = []
    cache: dict[str, str] = {}
    for pair in ladder.pairs:
        keys = []
        for text in (pair.prompt_a, pair.prompt_b):
            if text not in cache:
                ids = render_prompt(loaded.tokenizer, text, loaded.policy).token_ids
                cache[text] = _prompt_key(ids)
                prompts.setdefault(cache[text], ids)
            keys.append(cache[text])
        pairs.append((pair.pair_id, pair.rung, keys[0], keys[1]))
    return prompts, pairs


def _greedy_config(max_new_tokens: int, eos: tuple[int, ...], pad: int):
    from transformers import GenerationConfig

    # A fresh config: a model's shipped sampling or repetition settings never apply.
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                            eos_token_id=list(eos) if eos else None, pad_token_id=pad, repetition_penalty=1.0,
                            no_repeat_ngram_size=0, use_cache=True, return_dict_in_generate=True, output_logits=True)


def collect_states(loaded, prompts: dict[str, tuple[int, ...]], max_new_tokens: int,
                   batch_size: int = 16) -> tuple[dict[str, PromptTrace], float]:
    """Greedy-decode every prompt, capturing h per step; returns traces and the head check's max error.

    Batches hold prompts of one length (no padding), so a state never depends
    on what it was batched with. The model's own logits of every step are
    compared with g(W h + b) (:func:`check_head`, 1e-3 relative) and then dropped.
    """
    model, info = loaded.model, loaded.info
    device = next(model.parameters()).device
    ctx = info.context_length
    keys = [k for k in prompts if ctx is None or len(prompts[k]) + max(max_new_tokens, 1) <= ctx]
    by_len: dict[int, list[str]] = {}
    for k in sorted(keys, key=lambda k: (len(prompts[k]), k)):
        by_len.setdefault(len(prompts[k]), []).append(k)
    traces: dict[str, PromptTrace] = {}
    worst = 0.0
    eos = set(info.eos_token_ids)
    for length, group in by_len.items():
        for i in range(0, len(group), batch_size):
            batch = group[i : i + batch_size]
            ids = torch.tensor([list(prompts[k]) for k in batch], dtype=torch.long, device=device)
            states: list[torch.Tensor] = []
            hook = model.get_output_embeddings().register_forward_hook(
                lambda mod, inp, out: states.append(inp[0][:, -1, :].detach().float().cpu()))
            try:
                with torch.inference_mode():
                    if max_new_tokens > 0:
                        res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             generation_config=_greedy_config(max_new_tokens, info.eos_token_ids, info.pad_token_id))
                        step_logits = [x.float().cpu() for x in res.logits]
                        seqs = res.sequences[:, length:].cpu().tolist()
                    else:
                        step_logits = [model(input_ids=ids).logits[:, -1, :].float().cpu()]
                        seqs = [[] for _ in batch]
            finally:
                hook.remove()
            if len(states) != len(step_logits):
                raise RuntimeError(f"captured {len(states)} states for {len(step_logits)} steps")
            H = torch.stack(states, 1)  # [B, steps, d]
            L = torch.stack(step_logits, 1)
            worst = max(worst, check_head(model, H.reshape(-1, H.shape[-1]), L.reshape(-1, L.shape[-1]), strict=False).max_rel_err)
            for b, k in enumerate(batch):
                row = seqs[b]
                n = next((t for t, x in enumerate(row) if x in eos), None)
                n_gen = n if n is not None else len(row)
                steps = max(1, n_gen + (1 if n is not None else 0)) if max_new_tokens > 0 else 1
                traces[k] = PromptTrace(k, length, tuple(int(x) for x in row[:n_gen]), H[b, :steps].clone())
    return traces, worst


# -- per-position closed forms -------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def position_table(model_name: str, traces: dict[str, PromptTrace], head: HeadSpec, norms: torch.Tensor,
                   k: int, chunk: int = 256) -> tuple[pd.DataFrame, torch.Tensor]:
    """One row per position with the closed forms (ε = 1 for δ), the cluster/disperse δ's and the Fisher spectrum summary."""
    keys, steps, hs = [], [], []
    for key in sorted(traces):
        tr = traces[key]
        for s in range(tr.h.shape[0]):
            keys.append(key)
            steps.append(s)
        hs.append(tr.h)
    H = torch.cat(hs).to(head.dtype) if hs else torch.zeros(0, head.hidden_size, dtype=head.dtype)
    cols: dict[str, list[np.ndarray]] = {}
    eig_lists: list[np.ndarray] = []

    def put(name: str, arr) -> None:
        cols.setdefault(name, []).append(_np(arr) if isinstance(arr, torch.Tensor) else np.asarray(arr))

    for lo in range(0, H.shape[0], chunk):
        state = head_state(H[lo : lo + chunk], head)
        st = local_stability(state, head, norms)
        fk = fisher_topk(state, head, k=k, n_vectors=1)
        top = st.top1_id
        n_comp = min(N_COMPETITORS, head.vocab_size - 1)
        masked = state.p.scatter(1, top[:, None], -1.0)
        comp = torch.topk(masked, n_comp, dim=1).indices
        w_top = head.weight[top][:, None, :]
        w_c = head.weight[comp]
        fro_cluster = jacobian_fro_sq_moved_rows(state, head, norms, top, comp, w_c + 0.5 * (w_top - w_c)).sqrt()
        fro_disperse = jacobian_fro_sq_moved_rows(state, head, norms, top, comp, w_c - 0.5 * (w_top - w_c)).sqrt()
        for name, val in (("top1_id", top), ("top2_id", st.top2_id), ("top1_prob", st.top1_prob),
                          ("top2_mass", st.top2_mass), ("entropy", st.entropy), ("v_eff", st.v_eff),
                          ("margin", st.margin), ("jac_fro", st.jac_fro), ("delta_tcb", st.delta_tcb(1.0)),
                          ("flip_radius", st.flip_radius), ("rival_id", st.rival_id),
                          ("lambda1", fk.eigvals[:, 0]), ("eff_rank", fk.eff_rank), ("topk_mass", fk.mass),
                          ("delta_cluster", 1.0 / fro_cluster), ("delta_disperse", 1.0 / fro_disperse)):
            put(name, val)
        eig_lists.extend(list(_np(fk.eigvals.float())))
    df = pd.DataFrame({name: np.concatenate(v) for name, v in cols.items()}) if cols else pd.DataFrame()
    df["fisher_eigvals"] = eig_lists  # F_k spectrum, descending (k values per position)
    df.insert(0, "model", model_name)
    df.insert(1, "position_id", [f"{k}:{s}" for k, s in zip(keys, steps)])
    df.insert(2, "prompt_key", keys)
    df.insert(3, "step", np.asarray(steps, dtype=np.int64))
    df["is_prompt_end"] = df["step"] == 0
    df["two_token"] = (df["top2_mass"] >= TWO_TOKEN_MASS) & df["top1_prob"].between(*TWO_TOKEN_P1)
    return df, H


def select_positions(position_ids: Sequence[str], model_name: str, max_positions: int | None) -> np.ndarray:
    """Indices of the swept positions: all, or the first ``max_positions`` in a stable hash order."""
    n = len(position_ids)
    if max_positions is None or max_positions >= n:
        return np.arange(n)
    order = sorted(range(n), key=lambda i: stable_seed("geometry-select", model_name, position_ids[i]))
    return np.sort(np.asarray(order[:max_positions], dtype=np.int64))


def direction_sweep(model_name: str, positions: pd.DataFrame, H: torch.Tensor, idx: np.ndarray, head: HeadSpec,
                    norms: torch.Tensor, cfg: GeometryConfig) -> pd.DataFrame:
    """One row per (position, direction, ε): t*, t_emp, ρ, vᵀFv."""
    spec = cfg.directions
    M = 2 * spec.n_eig + spec.n_structured_top * (spec.n_structured_top - 1) + spec.n_random + spec.n_tangent + spec.n_negative
    # Bound the [n, M, V] logit-change tensor to ~32 MB per chunk in fp32.
    chunk = int(max(1, min(256, 8_000_000 // max(1, M * head.vocab_size))))
    out: list[pd.DataFrame] = []
    pos_ids = positions["position_id"].to_numpy()
    for lo in range(0, len(idx), chunk):
        sel = idx[lo : lo + chunk]
        keys = [f"{model_name}/{pos_ids[i]}" for i in sel]
        state = head_state(H[torch.as_tensor(sel)], head)
        st = local_stability(state, head, norms)
        fk = fisher_topk(state, head, k=cfg.k, n_vectors=max(spec.n_eig, 1), orient=-st.mu_minus_top)
        dirs, valid, meta = build_directions(keys, head, state, st, fk, spec)
        quad, a = quad_form(state, head, dirs)
        n, m = quad.shape
        base = {
            "position_id": np.repeat(pos_ids[sel], m),
            "direction_class": np.tile(np.asarray(meta.cls), n),
            "direction_label": np.tile(np.asarray(meta.label), n),
            "eig_rank": np.tile(np.asarray(meta.rank, dtype=np.int64), n),
            "sign": np.tile(np.asarray(meta.sign, dtype=np.int64), n),
            "valid": _np(valid).ravel(),
            "vFv": _np(quad).ravel().astype(np.float64),
        }
        for eps in cfg.eps:
            ts = t_star(quad, eps)
            te = empirical_boundary(state, head, a, eps, ts)
            r = rho(te, quad, eps)
            frame = pd.DataFrame({**base, "eps": float(eps), "t_star": _np(ts).ravel().astype(np.float64),
                                  "t_emp": _np(te).ravel().astype(np.float64), "rho": _np(r).ravel().astype(np.float64)})
            out.append(frame[frame["valid"]])
        del a, quad, dirs
    if not out:
        return pd.DataFrame()
    df = pd.concat(out, ignore_index=True).drop(columns=["valid"])
    df.insert(0, "model", model_name)
    return df


# -- paper checks ----------------------------------------------------------------


def jacobian_check(H: torch.Tensor, idx: np.ndarray, head: HeadSpec, n: int) -> dict[str, Any]:
    """‖J‖_F closed form (fp32 and fp64) against the Frobenius norm of an autograd Jacobian (fp64)."""
    V, d = head.vocab_size, head.hidden_size
    if n <= 0 or len(idx) == 0:
        return {"n": 0, "note": "no positions"}
    if V * d > 50_000_000:
        return {"n": 0, "note": f"skipped: a {V}×{d} Jacobian is too large for a check"}
    head64 = head.to(torch.float64)
    norms64 = row_norms_sq(head64)
    sel = torch.as_tensor(idx[:n])
    h64 = H[sel].detach().clone().to(torch.float64)
    cf64 = local_stability(head_state(h64, head64), head64, norms64).jac_fro
    h32 = H[sel].detach().clone().to(torch.float32)
    head32 = head.to(torch.float32)
    cf32 = local_stability(head_state(h32, head32), head32, row_norms_sq(head32)).jac_fro.double()
    errs64, errs32 = [], []
    for i in range(h64.shape[0]):
        J = torch.autograd.functional.jacobian(lambda x: torch.softmax(head64.logits(x), -1), h64[i], vectorize=True)
        ref = float(torch.linalg.norm(J))
        errs64.append(abs(float(cf64[i]) - ref) / ref)
        errs32.append(abs(float(cf32[i]) - ref) / ref)
    return {"n": len(errs64), "max_rel_err_fp64": max(errs64), "max_rel_err_fp32": max(errs32)}


def _corr(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return {"n": int(ok.sum()), "spearman": math.nan, "pearson": math.nan}
    return {"n": int(ok.sum()), "spearman": float(stats.spearmanr(x[ok], y[ok]).statistic),
            "pearson": float(stats.pearsonr(x[ok], y[ok]).statistic)}


def paper_checks(pos: pd.DataFrame, low_veff_max: float) -> dict[str, Any]:
    order = (pos["delta_cluster"] > pos["delta_tcb"]) & (pos["delta_tcb"] > pos["delta_disperse"])
    pe = pos["is_prompt_end"]
    cluster = {
        "share_all": float(order.mean()) if len(pos) else math.nan,
        "n_all": int(len(pos)),
        "share_prompt_end": float(order[pe].mean()) if pe.any() else math.nan,
        "n_prompt_end": int(pe.sum()),
        "median_ratio_cluster": float(np.median(pos["delta_cluster"] / pos["delta_tcb"])) if len(pos) else math.nan,
        "median_ratio_disperse": float(np.median(pos["delta_disperse"] / pos["delta_tcb"])) if len(pos) else math.nan,
    }
    subsets = {"all": np.ones(len(pos), dtype=bool), "prompt_end": pe.to_numpy(),
               "low_veff": (pos["v_eff"] <= low_veff_max).to_numpy(),
               "high_veff": (pos["v_eff"] >= HIGH_VEFF_MIN).to_numpy()}
    corr = {}
    for name, m in subsets.items():
        sub = pos[m]
        corr[name] = {
            "n": int(m.sum()),
            "delta_vs_veff": _corr(sub["delta_tcb"].to_numpy(), sub["v_eff"].to_numpy()),
            "delta_vs_margin": _corr(sub["delta_tcb"].to_numpy(), sub["margin"].to_numpy()),
        }
    return {"cluster_disperse": cluster, "correlations": corr, "low_veff_max": low_veff_max, "high_veff_min": HIGH_VEFF_MIN}


def pair_table(model_name: str, traces: dict[str, PromptTrace], pairs: Sequence[tuple[str, str, str, str]],
               head: HeadSpec, norms: torch.Tensor) -> pd.DataFrame:
    """Per perturbed pair: first-divergence step and the percentile of A's margin (and δ, flip radius) there."""
    cache: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for pair_id, rung, ka, kb in pairs:
        if rung == "identical" or ka == kb or ka not in traces or kb not in traces:
            continue
        a, b = traces[ka], traces[kb]
        if ka not in cache:
            cache[ka] = step_stability(a.h.to(torch.float32), head.to(torch.float32), norms.to(torch.float32))
        tr = cache[ka]
        fd = first_divergence(list(a.gen_ids), list(b.gen_ids))
        row = {"model": model_name, "pair_id": pair_id, "rung": rung, "first_div_step": fd, "steps_a": len(tr["margin"]),
               "margin_percentile": first_divergence_margin_percentile(tr["margin"], fd),
               "delta_tcb_percentile": first_divergence_margin_percentile(tr["delta_tcb"], fd),
               "flip_radius_percentile": first_divergence_margin_percentile(tr["flip_radius"], fd)}
        row["margin_at_divergence"] = float(tr["margin"][fd - 1]) if 0 < fd <= len(tr["margin"]) else math.nan
        row["median_margin_a"] = float(np.median(tr["margin"]))
        rows.append(row)
    return pd.DataFrame(rows)


# -- summaries -------------------------------------------------------------------


def _class_mask(df: pd.DataFrame, cls: str) -> np.ndarray:
    c, r = df["direction_class"].to_numpy(), df["eig_rank"].to_numpy()
    if cls == "eig1":
        return (c == "eig") & (r == 1)
    if cls in ("eig1+", "eig1-"):
        return (c == "eig") & (r == 1) & (df["sign"].to_numpy() == (1 if cls.endswith("+") else -1))
    if cls == "eig2-7":
        return (c == "eig") & (r >= 2)
    if cls == "eig_pooled":
        return c == "eig"
    if cls.startswith("eig") and cls[3:].isdigit():
        return (c == "eig") & (r == int(cls[3:]))
    return c == cls


def median_ci(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Median with a bootstrap CI that resamples positions (all of a position's values together).

    Both signs of a direction come from one position and are not independent:
    resampling values one by one would understate the interval.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    v, g = v[ok], np.asarray(groups)[ok]
    if v.size == 0:
        return {"n": 0, "n_positions": 0, "median": None, "ci": [None, None]}
    uniq, gi = np.unique(g, return_inverse=True)
    order = np.argsort(v, kind="stable")
    vs, gs = v[order], gi[order]
    med = float(np.median(v))
    lo = hi = med
    if n_boot > 0 and uniq.size > 1:
        rng = np.random.default_rng(seed)
        P = uniq.size
        draws = rng.integers(0, P, size=(n_boot, P)) + (np.arange(n_boot) * P)[:, None]
        counts = np.bincount(draws.ravel(), minlength=n_boot * P).reshape(n_boot, P)  # times each position is drawn
        meds = _weighted_medians(vs, gs, counts)
        lo, hi = (float(x) for x in np.quantile(meds, [(1 - level) / 2, 1 - (1 - level) / 2]))
    return {"n": int(v.size), "n_positions": int(uniq.size), "median": med, "ci": [lo, hi]}


def _weighted_medians(vs: np.ndarray, gs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median of each resample: sorted values ``vs`` of positions ``gs``, position multiplicities ``counts`` [B, P].

    Defined as np.median is (mean of the lower and upper middle values).
    Every resample's median lies near the sample median, so cumulative weights
    are formed only over a central band of the sorted values (the weight below
    the band is one matrix-vector product), widened until every resample's
    two middle values fall inside it: O(B·band) instead of O(B·n).
    """
    n, P = vs.size, counts.shape[1]
    half = (counts @ np.bincount(gs, minlength=P)) / 2.0
    w = 0.05
    while True:
        lo = max(0, int(np.floor((0.5 - w) * n)) - 1)
        hi = min(n, int(np.ceil((0.5 + w) * n)) + 1)
        below = counts @ np.bincount(gs[:lo], minlength=P)
        cw = below[:, None] + np.cumsum(counts[:, gs[lo:hi]], axis=1)
        if ((below < half) & (cw[:, -1] > half)).all() or (lo == 0 and hi == n):
            break
        w *= 2
    i_lo = lo + np.minimum((cw < half[:, None]).sum(axis=1), hi - lo - 1)
    i_hi = lo + np.minimum((cw <= half[:, None]).sum(axis=1), hi - lo - 1)
    return 0.5 * (vs[i_lo] + vs[i_hi])


def _rho_cells(df: pd.DataFrame, classes: Sequence[str], n_boot: int, key: tuple) -> dict[str, Any]:
    out = {}
    for cls in classes:
        sub = df[_class_mask(df, cls)]
        out[cls] = median_ci(sub["rho"].to_numpy(), sub["position_id"].to_numpy(), n_boot, stable_seed(*key, cls))
    return out


def _edges(x: np.ndarray, n: int) -> np.ndarray:
    return np.unique(np.quantile(x, np.linspace(0, 1, n + 1))) if x.size else np.zeros(0)


def _strata(df: pd.DataFrame, pos: pd.DataFrame, column: str, eps_list: Sequence[float]) -> dict[str, Any]:
    """Quantile strata of a position property: per stratum, median ρ per class and ε."""
    swept = pos[pos["position_id"].isin(df["position_id"].unique())]
    x = swept[column].to_numpy()
    edges = _edges(x, N_STRATA)
    if edges.size < 2:
        return {"edges": edges.tolist(), "cells": []}
    bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    stratum_of = dict(zip(swept["position_id"], bins))
    s = df["position_id"].map(stratum_of).to_numpy()
    cells = []
    for b in range(edges.size - 1):
        cell = {"stratum": b, "lo": float(edges[b]), "hi": float(edges[b + 1]), "n_positions": int((bins == b).sum()), "rho": {}}
        for eps in eps_list:
            sub = df[(s == b) & (df["eps"].to_numpy() == eps)]
            cell["rho"][_eps_key(eps)] = {
                cls: (float(np.nanmedian(r)) if (r := sub[_class_mask(sub, cls)]["rho"].to_numpy()).size and np.isfinite(r).any() else None)
                for cls in CLASS_ORDER
            }
        cells.append(cell)
    return {"edges": edges.tolist(), "cells": cells}


def _within_variance(df: pd.DataFrame, pos: pd.DataFrame, column: str, eps: float) -> float | None:
    """Mean within-cell variance of log ρ on the top eigenvector, cells = property quintile × sign.

    Lower means the property sorts ρ better. The two signs are kept apart:
    at a confident position they sit on opposite sides of 1 by construction
    (0.34 vs 6.0 at q = 0.999), which no position property can explain.
    """
    sub = df[_class_mask(df, "eig1") & (df["eps"].to_numpy() == eps)]
    sub = sub[np.isfinite(sub["rho"]) & (sub["rho"] > 0)]
    prop = pos.set_index("position_id")[column]
    x = prop.reindex(sub["position_id"]).to_numpy()
    swept = prop.reindex(sub["position_id"].unique()).to_numpy()
    edges = _edges(swept, N_STRATA)
    if edges.size < 2:
        return None
    bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    sign = sub["sign"].to_numpy()
    lr = np.log(sub["rho"].to_numpy())
    vs = [np.var(lr[m]) for b in range(edges.size - 1) for sg in (1, -1) if (m := (bins == b) & (sign == sg)).sum() > 1]
    return float(np.mean(vs)) if vs else None


def _eps_key(eps: float) -> str:
    return f"{eps:g}"


def summarize_model(df: pd.DataFrame, pos: pd.DataFrame, pairs: pd.DataFrame, cfg: GeometryConfig,
                    model_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    swept_ids = set(df["position_id"].unique()) if len(df) else set()
    two_ids = set(pos.loc[pos["two_token"], "position_id"])
    in_two = df["position_id"].isin(two_ids).to_numpy() if len(df) else np.zeros(0, dtype=bool)
    out["n_positions"] = int(len(pos))
    out["n_prompt_end_positions"] = int(pos["is_prompt_end"].sum())
    out["n_swept_positions"] = len(swept_ids)
    out["n_two_token_positions"] = int(len(two_ids & swept_ids))
    out["share_two_token"] = float(pos["two_token"].mean()) if len(pos) else math.nan
    out["rho"] = {}
    out["rho_by_rank"] = {}
    out["calibration"] = {}
    out["spearman"] = {}
    for eps in cfg.eps:
        e = df[df["eps"].to_numpy() == eps]
        et = df[(df["eps"].to_numpy() == eps) & in_two]
        key = (model_name, "rho", _eps_key(eps))
        out["rho"][_eps_key(eps)] = {
            "all": _rho_cells(e, CLASS_ORDER, cfg.n_bootstrap, key + ("all",)),
            "two_token": _rho_cells(et, CLASS_ORDER, cfg.n_bootstrap, key + ("two",)),
        }
        ranks = [f"eig{r}" for r in range(1, cfg.directions.n_eig + 1)]
        out["rho_by_rank"][_eps_key(eps)] = _rho_cells(e, ranks, cfg.n_bootstrap, key + ("rank",))
        classes = np.where(e["direction_class"] == "eig", "eig", e["direction_class"])
        cal = calibrate(e["t_star"].to_numpy(), e["t_emp"].to_numpy(), e["position_id"].to_numpy(), classes,
                        key=f"{model_name}/calibration/{_eps_key(eps)}")
        out["calibration"][_eps_key(eps)] = {c: s.to_dict() for c, s in cal.items()}
        sp = per_position_spearman(e["t_star"].to_numpy(), e["t_emp"].to_numpy(), e["position_id"].to_numpy())
        out["spearman"][_eps_key(eps)] = (
            {"n_positions": int(sp.size), "median": float(np.median(sp)), "q10": float(np.quantile(sp, 0.1)),
             "q90": float(np.quantile(sp, 0.9)), "min": float(sp.min()), "max": float(sp.max())}
            if sp.size else {"n_positions": 0}
        )
    head_eps = 0.01 if 0.01 in cfg.eps else min(cfg.eps)
    cell = out["rho"][_eps_key(head_eps)]["two_token"]["eig1"]
    med = cell["median"]
    out["headline"] = {
        "eps": head_eps, "class": "eig1 (both signs)",
        "regime": f"top-2 mass ≥ {TWO_TOKEN_MASS}, top-1 in [{TWO_TOKEN_P1[0]}, {TWO_TOKEN_P1[1]}]",
        **cell, "range": list(HEADLINE_RANGE),
        "in_range": None if med is None else bool(HEADLINE_RANGE[0] <= med <= HEADLINE_RANGE[1]),
        "by_sign": {sg: out["rho"][_eps_key(head_eps)]["two_token"][f"eig1{sg}"] for sg in "+-"},
    }
    out["strata"] = {col: _strata(df, pos, col, cfg.eps) for col in ("entropy", "eff_rank")} if len(df) else {}
    out["stratifier_variance"] = {
        _eps_key(eps): {col: _within_variance(df, pos, col, eps) for col in ("entropy", "eff_rank", "top1_prob")}
        for eps in cfg.eps
    } if len(df) else {}
    out["checks"] = paper_checks(pos, cfg.low_veff_max)
    if len(pairs):
        mp = pairs["margin_percentile"].to_numpy(dtype=np.float64)
        ok = np.isfinite(mp)
        by_rung = {}
        for rung, grp in pairs.groupby("rung", sort=False):
            g = grp["margin_percentile"].to_numpy(dtype=np.float64)
            g = g[np.isfinite(g)]
            by_rung[rung] = {"n": int(g.size), "median": float(np.median(g)) if g.size else None,
                             "share_below_50": float(np.mean(g < 50)) if g.size else None}
        out["boundary_vs_bulk"] = {
            "n_pairs": int(len(pairs)), "n_diverged": int(ok.sum()),
            "median_margin_percentile": float(np.median(mp[ok])) if ok.any() else None,
            "mean_margin_percentile": float(np.mean(mp[ok])) if ok.any() else None,
            "share_below_50": float(np.mean(mp[ok] < 50)) if ok.any() else None,
            "median_flip_radius_percentile": _nanmedian(pairs["flip_radius_percentile"]),
            "median_delta_tcb_percentile": _nanmedian(pairs["delta_tcb_percentile"]),
            "by_rung": by_rung,
        }
    else:
        out["boundary_vs_bulk"] = {"n_pairs": 0}
    return out


def _nanmedian(s: pd.Series) -> float | None:
    x = s.to_numpy(dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _json_safe(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


# -- the run ---------------------------------------------------------------------


def run_model(entry: ModelEntry, cfg: GeometryConfig, record: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    t0 = time.perf_counter()
    loaded = cfg.loader(entry, cfg.variant)
    record["info"] = dataclasses.asdict(loaded.info)
    timings = {"load": time.perf_counter() - t0}
    head = head_from_model(loaded.model, dtype=torch.float32)
    norms = row_norms_sq(head)
    record["head"] = head.describe()
    t1 = time.perf_counter()
    prompts, pairs = _rendered_prompts(cfg.ladder, loaded)
    traces, head_err = collect_states(loaded, prompts, cfg.max_new_tokens, cfg.batch_size)
    record["head"]["check_max_rel_err"] = head_err
    if not head_err <= 1e-3:
        raise HeadMismatch(f"g(W h + b) misses the model's logits by {head_err:.3g} relative (tolerance 1e-3)")
    timings["decode"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    with torch.no_grad():
        pos, H = position_table(entry.name, traces, head, norms, cfg.k)
        idx = select_positions(pos["position_id"].tolist(), entry.name, cfg.max_positions)
        pos["swept"] = np.isin(np.arange(len(pos)), idx)
        df = direction_sweep(entry.name, pos, H, idx, head, norms, cfg)
        ptab = pair_table(entry.name, traces, pairs, head, norms)
    timings["sweep"] = time.perf_counter() - t2
    summary = summarize_model(df, pos, ptab, cfg, entry.name)
    summary["jacobian_check"] = jacobian_check(H, idx, head, cfg.n_jacobian_checks)
    summary["head"] = record["head"]
    summary["n_prompts"] = len(traces)
    summary["n_prompts_skipped_context"] = len(prompts) - len(traces)
    timings["summary"] = time.perf_counter() - t2 - timings["sweep"]
    summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    record["timings_s"] = summary["timings_s"]
    if len(df):
        df = df.merge(pos[["position_id", "step", "is_prompt_end", "two_token", "entropy", "top1_prob", "top2_mass",
                           "v_eff", "margin", "delta_tcb", "flip_radius", "eff_rank"]], on="position_id", how="left")
    del loaded
    gc.collect()
    return df, pos, ptab, summary


def _config_record(cfg: GeometryConfig) -> dict[str, Any]:
    return {
        "models": [m.model_dump() for m in cfg.models],
        "ladder": {"name": cfg.ladder.name, "source": cfg.ladder.source, "sha256": cfg.ladder.source_sha256,
                   "pairs": len(cfg.ladder.pairs)},
        "eps": list(cfg.eps), "max_new_tokens": cfg.max_new_tokens, "max_positions": cfg.max_positions, "k": cfg.k,
        "variant": cfg.variant, "directions": dataclasses.asdict(cfg.directions), "n_bootstrap": cfg.n_bootstrap,
        "n_jacobian_checks": cfg.n_jacobian_checks, "low_veff_max": cfg.low_veff_max,
        "two_token_regime": {"top2_mass_min": TWO_TOKEN_MASS, "top1_range": list(TWO_TOKEN_P1)},
    }


def run_geometry(cfg: GeometryConfig) -> GeometryResult:
    validate_geometry_config(cfg)
    run_dir = rundir.new_run_dir(cfg.out, suffix="-geometry")
    manifest = base_manifest("geometry", list(cfg.argv or sys.argv), _config_record(cfg))
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    frames, positions, pair_frames = [], [], []
    summary: dict[str, Any] = {"schema": SCHEMA, "eps": list(cfg.eps), "config": _config_record(cfg), "models": {}}
    for entry in cfg.models:
        record: dict[str, Any] = {"name": entry.name, "source": entry.source, "requested_revision": entry.revision}
        manifest["models"].append(record)
        try:
            df, pos, ptab, s = run_model(entry, cfg, record)
            frames.append(df)
            positions.append(pos)
            pair_frames.append(ptab)
            summary["models"][entry.name] = {"status": "ok", **s}
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded; the other models go on
            err = error_line(exc)
            record.update(status="failed", error=err, traceback=traceback.format_exc(limit=4))
            summary["models"][entry.name] = {"status": "failed", "error": err}
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    nonempty = [f for f in frames if len(f)]
    rundir.atomic_write_parquet(run_dir / GEOMETRY_PARQUET, pd.concat(nonempty, ignore_index=True) if nonempty else pd.DataFrame())
    rundir.atomic_write_parquet(run_dir / POSITIONS_PARQUET, pd.concat(positions, ignore_index=True) if positions else pd.DataFrame())
    nonempty_pairs = [p for p in pair_frames if len(p)]
    rundir.atomic_write_parquet(run_dir / PAIRS_PARQUET, pd.concat(nonempty_pairs, ignore_index=True) if nonempty_pairs else pd.DataFrame())
    summary = _json_safe(summary)
    rundir.atomic_write_json(run_dir / SUMMARY_JSON, summary)
    rundir.atomic_write_text(run_dir / REPORT_MD, render_geometry_markdown(summary))
    manifest["status"] = "complete"
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    failed = [m for m in manifest["models"] if m.get("status") != "ok"]
    return GeometryResult(run_dir, EXIT_MODEL_FAILED if failed else EXIT_OK, summary, terminal_geometry(summary))


# -- text ------------------------------------------------------------------------


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 10 ** (-nd)):
        return f"{x:.{max(nd - 1, 1)}e}"
    return f"{x:.{nd}f}"


def _cell(c: dict | None) -> str:
    if not c or c.get("median") is None:
        return "–"
    lo, hi = c.get("ci", [None, None])
    return f"{_f(c['median'])} [{_f(lo)}, {_f(hi)}] (n={c['n']}/{c['n_positions']})"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def render_geometry_markdown(summary: dict[str, Any]) -> str:
    """The report section: every class, ε and stratum, then the paper's checks."""
    eps = [_eps_key(e) for e in summary.get("eps", [])]
    lines = ["## Local geometry: closed forms against the head", ""]
    lines.append(
        "ρ = ½ t_emp² vᵀFv / ε (1 = the Fisher quadratic is exact); cells are median [95% CI, positions "
        "resampled] (n = directions / positions). Two-token regime: "
        f"top-2 mass ≥ {TWO_TOKEN_MASS}, top-1 in [{TWO_TOKEN_P1[0]}, {TWO_TOKEN_P1[1]}]. Eigenvectors count with both signs."
    )
    lines.append("")
    for name, m in summary.get("models", {}).items():
        lines.append(f"### {name}")
        lines.append("")
        if m.get("status") != "ok":
            lines += [f"FAILED: {m.get('error')}", ""]
            continue
        hl = m["headline"]
        head = m.get("head", {})
        lines.append(
            f"{m['n_prompts']} prompts, {m['n_positions']} positions ({m['n_prompt_end_positions']} prompt ends), "
            f"{m['n_swept_positions']} swept, {m['n_two_token_positions']} of them in the two-token regime "
            f"({_pct(m['share_two_token'])} of all positions). Head: post map {head.get('post')}"
            f"{'' if head.get('post_value') is None else ' ' + _f(head.get('post_value'))}, bias {_f(head.get('bias'))}, "
            f"g(Wh+b) vs the model's logits max rel. error {_f(head.get('check_max_rel_err'), 2)}."
        )
        lines.append("")
        verdict = "–" if hl.get("in_range") is None else ("inside" if hl["in_range"] else "OUTSIDE")
        by_sign = hl.get("by_sign", {})
        lines.append(
            f"**Headline** (ε = {_f(hl['eps'], 2)}, top eigenvector, two-token regime): ρ = {_cell(hl)}; "
            f"{verdict} [{hl['range'][0]}, {hl['range'][1]}]. By sign: +v (towards the top token) "
            f"{_cell(by_sign.get('+'))}, −v {_cell(by_sign.get('-'))}."
        )
        lines.append("")
        for subset, title in (("all", "all swept positions"), ("two_token", "two-token regime")):
            lines.append(f"ρ by direction class, {title}:")
            lines.append("")
            lines.append("| class | " + " | ".join(f"ε = {e}" for e in eps) + " |")
            lines.append("|---|" + "---|" * len(eps))
            for cls in CLASS_ORDER:
                lines.append(f"| {cls} | " + " | ".join(_cell(m["rho"][e][subset].get(cls)) for e in eps) + " |")
            lines.append("")
        ranks = list(next(iter(m["rho_by_rank"].values()), {}).keys())
        if ranks:
            lines.append("ρ by eigenvector rank (all swept positions):")
            lines.append("")
            lines.append("| rank | " + " | ".join(f"ε = {e}" for e in eps) + " |")
            lines.append("|---|" + "---|" * len(eps))
            for r in ranks:
                lines.append(f"| {r} | " + " | ".join(_cell(m["rho_by_rank"][e].get(r)) for e in eps) + " |")
            lines.append("")
        for col, title in (("entropy", "entropy (nats)"), ("eff_rank", "effective Fisher rank")):
            st = m.get("strata", {}).get(col)
            if not st or not st.get("cells"):
                continue
            for e in eps:
                lines.append(f"Median ρ by {title} quintile, ε = {e}:")
                lines.append("")
                lines.append("| stratum | range | positions | " + " | ".join(CLASS_ORDER) + " |")
                lines.append("|---|---|---|" + "---|" * len(CLASS_ORDER))
                for c in st["cells"]:
                    vals = c["rho"].get(e, {})
                    lines.append(f"| {c['stratum'] + 1} | {_f(c['lo'])}–{_f(c['hi'])} | {c['n_positions']} | "
                                 + " | ".join(_f(vals.get(cls)) for cls in CLASS_ORDER) + " |")
                lines.append("")
        sv = m.get("stratifier_variance", {})
        if sv:
            lines.append("Mean within-cell variance of log ρ (top eigenvector; cells = quintile × sign; lower = the property sorts ρ better):")
            lines.append("")
            lines.append("| ε | entropy | effective Fisher rank | top-1 probability |")
            lines.append("|---|---|---|---|")
            for e in eps:
                v = sv.get(e, {})
                lines.append(f"| {e} | {_f(v.get('entropy'), 4)} | {_f(v.get('eff_rank'), 4)} | {_f(v.get('top1_prob'), 4)} |")
            lines.append("")
        lines.append("Calibration (share of held-out predictions within 50% of t_emp; isotonic on log t*, 5-fold CV grouped by position):")
        lines.append("")
        lines.append("| ε | class | n | raw | calibrated |")
        lines.append("|---|---|---|---|---|")
        for e in eps:
            for c, s in m["calibration"][e].items():
                lines.append(f"| {e} | {c} | {s['n']} | {_pct(s['share_raw'])} | {_pct(s['share_calibrated'])} |")
        lines.append("")
        lines.append("Per-position Spearman of t* vs t_emp across directions:")
        lines.append("")
        lines.append("| ε | positions | median | 10% | 90% | min | max |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in eps:
            s = m["spearman"][e]
            lines.append(f"| {e} | {s.get('n_positions', 0)} | {_f(s.get('median'))} | {_f(s.get('q10'))} | "
                         f"{_f(s.get('q90'))} | {_f(s.get('min'))} | {_f(s.get('max'))} |")
        lines.append("")
        ck = m["checks"]
        jc = m.get("jacobian_check", {})
        cd = ck["cluster_disperse"]
        lines.append("TCB checks:")
        lines.append("")
        if jc.get("n"):
            lines.append(f"- ‖J‖_F closed form vs autograd Jacobian on {jc['n']} positions: max rel. error "
                         f"{_f(jc['max_rel_err_fp64'], 2)} (fp64), {_f(jc['max_rel_err_fp32'], 2)} (fp32).")
        else:
            lines.append(f"- ‖J‖_F vs autograd: {jc.get('note', 'not run')}.")
        lines.append(f"- Cluster/disperse (top-{N_COMPETITORS} competitors moved halfway, h and p fixed): "
                     f"δ(cluster) > δ(orig) > δ(disperse) at {_pct(cd['share_all'])} of {cd['n_all']} positions, "
                     f"{_pct(cd['share_prompt_end'])} of {cd['n_prompt_end']} prompt ends; median δ ratio "
                     f"cluster/orig {_f(cd['median_ratio_cluster'])}, disperse/orig {_f(cd['median_ratio_disperse'])}.")
        lines.append("")
        lines.append(f"Correlation of δ_TCB with V_eff and with the logit margin (low_veff: V_eff ≤ {ck['low_veff_max']}, "
                     f"high_veff: V_eff ≥ {ck.get('high_veff_min')}):")
        lines.append("")
        lines.append("| subset | n | δ~V_eff Spearman | δ~V_eff Pearson | δ~margin Spearman | δ~margin Pearson |")
        lines.append("|---|---|---|---|---|---|")
        for sub, c in ck["correlations"].items():
            a, b = c["delta_vs_veff"], c["delta_vs_margin"]
            lines.append(f"| {sub} | {c['n']} | {_f(a['spearman'])} | {_f(a['pearson'])} | {_f(b['spearman'])} | {_f(b['pearson'])} |")
        lines.append("")
        bb = m.get("boundary_vs_bulk", {})
        if bb.get("n_pairs"):
            lines.append(
                f"Boundary beats bulk: over {bb['n_diverged']} diverging perturbed pairs (of {bb['n_pairs']}), the "
                f"first-divergence step's margin sits at the {_f(bb['median_margin_percentile'], 1)}th percentile "
                f"(median) of output A's own trace; {_pct(bb['share_below_50'])} below the median step "
                f"(flip radius: {_f(bb['median_flip_radius_percentile'], 1)}th, δ_TCB: {_f(bb['median_delta_tcb_percentile'], 1)}th)."
            )
            lines.append("")
            lines.append("| rung | diverged | median percentile | share below 50 |")
            lines.append("|---|---|---|---|")
            for rung, r in bb["by_rung"].items():
                lines.append(f"| {rung} | {r['n']} | {_f(r['median'], 1)} | {_pct(r['share_below_50'])} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def terminal_geometry(summary: dict[str, Any]) -> str:
    lines = []
    for name, m in summary.get("models", {}).items():
        if m.get("status") != "ok":
            lines.append(f"{name}: FAILED {m.get('error')}")
            continue
        hl = m["headline"]
        lines.append(f"{name}: {m['n_positions']} positions, {m['n_swept_positions']} swept; "
                     f"two-token ρ(eig1, ε={_f(hl['eps'], 2)}) = {_cell(hl)}")
    return "\n".join(lines)
