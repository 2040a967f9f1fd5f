"""Per-position closed forms, the direction sweep, the Jacobian check and the per-pair table."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from harness.score.metrics.edit_distance import first_divergence
from harness.stability.closed_form import head_state, jacobian_fro_sq_moved_rows, local_stability
from harness.stability.fisher import empirical_boundary, fisher_topk, quad_form, rho, t_star
from harness.stability.directions import build_directions, stable_seed
from harness.stability.head import HeadSpec
from harness.stability.traces import first_divergence_margin_percentile, step_stability
from harness.geometry.config import GeometryConfig, HIGH_VEFF_MIN, N_COMPETITORS, TWO_TOKEN_MASS, TWO_TOKEN_P1
from harness.geometry.records import PromptTrace


ROW_ELEMENTS = 4_000_000
"""Numbers per [rows, V] tensor the per-position closed forms work on at once (16 MB in fp32)."""


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def position_table(model_name: str, traces: dict[str, PromptTrace], head: HeadSpec, norms: torch.Tensor,
                   k: int, chunk: int | None = None) -> tuple[pd.DataFrame, torch.Tensor]:
    """One row per position with the closed forms (ε = 1 for δ), the cluster/disperse δ's and the Fisher spectrum summary.

    Positions go through in chunks of ``chunk`` rows (default: as many as keep one [rows, V] fp32 tensor near
    16 MB): the closed forms hold about a dozen such tensors at once, which at V = 151,936 and 256 rows was 2 GB.
    """
    if chunk is None:
        chunk = max(1, min(256, ROW_ELEMENTS // head.vocab_size))
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
