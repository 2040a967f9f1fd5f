"""`stabprobe geometry`: the closed forms checked on real hidden states.

For each model: render every distinct prompt of the ladder, decode greedily
(fp32 by default, so the checks run at full precision) and capture the
post-norm state ``h`` at the prompt end and at every decode step with a
forward hook on the output embedding, as the decoder does. Then:

- the Fisher KL-boundary study (METRICS.md): a direction sweep per position,
  t* against the empirical boundary for each ε, ρ per class (median with a
  position-clustered bootstrap CI), per-position Spearman, isotonic
  calibration (5-fold CV grouped by position), stratification by entropy and
  by effective Fisher rank; the seed's 1% / 8% claim tested over every swept
  position (the two-token regime, where ρ ≈ 1 by construction, counted and
  shown apart) with boundary ratios per class and ε whose CIs resample base
  prompts (harness.geometry.ratios);
- the TCB paper's checks: ‖J‖_F and J against autograd JVPs/VJPs (bounded memory,
  harness.stability.jacobian_check), the
  cluster/disperse simulation, correlations of δ_TCB with V_eff and margin;
- "boundary beats bulk": for each perturbed pair, the percentile of the
  first-divergence step's margin within output A's own trace.

Writes ``geometry.parquet`` (position × direction × ε), ``geometry_positions.parquet``,
``geometry_pairs.parquet``, ``geometry_summary.json``, ``geometry.md`` and a manifest.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.core import rundir
from harness.core.malloc import THRESHOLD_BYTES, fix_mmap_threshold
from harness.run.study import study_run
from harness.models.registry import ModelEntry
from harness.stability.head import HeadMismatch, head_from_model, row_norms_sq
from harness.geometry.config import GeometryResult, GEOMETRY_PARQUET, GeometryConfig, PAIRS_PARQUET, POSITIONS_PARQUET, REPORT_MD, SCHEMA, SUMMARY_JSON, TWO_TOKEN_MASS, TWO_TOKEN_P1, validate_geometry_config
from harness.geometry.collect import _rendered_prompts, collect_states
from harness.geometry.tables import direction_sweep, pair_table, position_table, select_positions
from harness.stability.jacobian_check import jacobian_check
from harness.geometry.summarize import summarize_model
from harness.geometry.markdown import render_geometry_markdown, terminal_geometry


def base_prompts(ladder, pairs) -> dict[str, str]:
    """Rendered prompt key -> the base prompt it belongs to (side A's first, so a paired control's side B, which
    is another base prompt's text, keeps its own)."""
    prompt_id = {p.pair_id: p.prompt_id for p in ladder.pairs}
    out: dict[str, str] = {}
    for side in (2, 3):
        for pair in pairs:
            out.setdefault(pair[side], prompt_id[pair[0]])
    return out


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
        pos.insert(3, "base_prompt", pos["prompt_key"].map(base_prompts(cfg.ladder, pairs)))
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
        df = df.merge(pos[["position_id", "base_prompt", "step", "is_prompt_end", "two_token", "entropy", "top1_prob", "top2_mass",
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
    config = _config_record(cfg)
    # Real-vocabulary tensors freed back to the kernel, not into a fragmenting heap (harness.core.malloc).
    config["malloc_mmap_threshold"] = THRESHOLD_BYTES if fix_mmap_threshold() else None
    with study_run("geometry", cfg.out, cfg.argv, config, threads=cfg.threads) as study:
        outcomes = study.measure_models(cfg.models, lambda entry, record: run_model(entry, cfg, record))
        summary: dict[str, Any] = {"schema": SCHEMA, "eps": list(cfg.eps), "config": config, "models": {
            o.entry.name: o.summary_entry(lambda r: r[3]) for o in outcomes}}
        done = [o.result for o in outcomes if o.error is None]
        frames = [df for df, _, _, _ in done if len(df)]
        positions = [pos for _, pos, _, _ in done]
        pair_frames = [ptab for _, _, ptab, _ in done if len(ptab)]
        run_dir = study.run_dir
        rundir.atomic_write_parquet(run_dir / GEOMETRY_PARQUET, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
        rundir.atomic_write_parquet(run_dir / POSITIONS_PARQUET, pd.concat(positions, ignore_index=True) if positions else pd.DataFrame())
        rundir.atomic_write_parquet(run_dir / PAIRS_PARQUET, pd.concat(pair_frames, ignore_index=True) if pair_frames else pd.DataFrame())
        summary = study.write_summary(SUMMARY_JSON, summary)
        rundir.atomic_write_text(run_dir / REPORT_MD, render_geometry_markdown(summary))
    return GeometryResult(run_dir, study.exit_code, summary, terminal_geometry(summary))
