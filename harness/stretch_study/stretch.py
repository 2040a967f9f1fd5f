"""`stabprobe stretch`: where inside a model a prompt edit grows, and how much each block stretches.

Per model (loaded in fp32, so the derivatives are not bf16 noise; the demo
weights are stored in bf16 and upcast exactly):

- layer profile of every ladder pair at the prompt-end position
  (:mod:`harness.stretch.profile`), summarised per rung;
- per-block stretching σ_max at the prompt end of each base prompt, the final
  norm and the end-to-end products (:mod:`harness.stretch.blocks`,
  :mod:`harness.stretch.power`);
- along the generation: side A's greedy continuation ``y`` is teacher-forced
  after both prompts; ``d_t = ‖s_t(A) − s_t(B)‖ / ‖s_t(A)‖`` on the
  final-norm state at step ``t``, next to both sides' margin traces. Side B's
  own greedy output leaves ``y`` at the first step where its argmax differs
  (``flip_step``), so ``d_t`` up to there is the divergence of the two real
  trajectories; the growth rate of ``ln d_t`` over that window is the
  finite-time, Lyapunov-style estimate.

Writes ``stretch_profiles.parquet``, ``stretch_layers.parquet``,
``stretch_steps.parquet``, ``stretch_pairs.parquet``, ``stretch_summary.json``,
``stretch.md``, ``stretch.html``, PNG plots and a manifest.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from harness.core import rundir
from harness.errors import InputError
from harness.ladder.records import RUNGS, Ladder
from harness.models.loading import load_model
from harness.models.registry import ModelEntry
from harness.run.study import study_run
from harness.stability.traces import first_divergence_margin_percentile
from harness.stretch.growth import growth_rate
from harness.stretch.profile import relative_profile, summarize_profiles
from harness.stretch_study import measure
from harness.stretch_study.common import fits, render_pairs, select_pairs
from harness.stretch_study.records import StudyResult

SCHEMA = "stabprobe-stretch/1"


@dataclass(frozen=True)
class StretchConfig:
    """What `stabprobe stretch` measures."""

    models: tuple[ModelEntry, ...]
    """Models to study."""
    ladder: Ladder
    """Pairs whose layer profiles and generation traces are measured."""
    out: Path = Path("runs")
    """Directory that receives the run directory."""
    max_prompts: int | None = None
    """Base prompts (ladder order) whose pairs are used; None = all."""
    stretch_prompts: int = 8
    """Base prompts whose prompt end gets the per-block power iteration (the costly part)."""
    max_new_tokens: int = 32
    """Greedy steps of side A along which the pair's distance is traced."""
    tol: float = 1e-5
    """Relative tolerance of the power iteration."""
    max_iter: int = 200
    """Iteration cap of the power iteration (unconverged maps are recorded as such)."""
    variant: str = "fp32"
    """Weights the study loads (fp32: derivatives at full precision)."""
    argv: tuple[str, ...] = ()
    """Command line, for the manifest."""
    threads: int | None = None
    """torch CPU threads of the study (None: the project's policy, one on CPU; harness.core.threads)."""
    loader: Callable[[ModelEntry, str], Any] = load_model
    """Loads (entry, variant) -> LoadedModel."""


def validate(cfg: StretchConfig) -> None:
    if not cfg.models:
        raise InputError("--models", "", "no models")
    if cfg.max_new_tokens < 1:
        raise InputError("--max-new-tokens", str(cfg.max_new_tokens), "expected a positive integer")
    if cfg.stretch_prompts < 0:
        raise InputError("--stretch-prompts", str(cfg.stretch_prompts), "expected a non-negative integer")
    if not (0 < cfg.tol < 1):
        raise InputError("--tol", str(cfg.tol), "expected a number in (0, 1)")
    if cfg.max_iter < 2:
        raise InputError("--max-iter", str(cfg.max_iter), "expected an integer ≥ 2")
    select_pairs(cfg.ladder, cfg.max_prompts)


def layer_names(n_blocks: int) -> list[str]:
    return ["embeddings"] + [f"block_{l}" for l in range(1, n_blocks + 1)] + ["final_norm"]


def measure_model(loaded, cfg: StretchConfig) -> dict[str, pd.DataFrame]:
    """All four tables of one model (rows carry no model name; the caller adds it)."""
    model = loaded.model
    model.requires_grad_(False)
    ctx = loaded.info.context_length
    pairs = render_pairs(select_pairs(cfg.ladder, cfg.max_prompts), loaded)
    pairs = [p for p in pairs if fits(p.ids_a, cfg.max_new_tokens, ctx) and fits(p.ids_b, cfg.max_new_tokens, ctx)]
    states: dict[tuple[int, ...], np.ndarray] = {}

    def end_states(ids):
        if ids not in states:
            states[ids] = measure.prompt_end_states(model, ids)
        return states[ids]

    prof_rows, step_rows, pair_rows, layer_rows = [], [], [], []
    names = None
    for rp in pairs:
        a, b = end_states(rp.ids_a), end_states(rp.ids_b)
        names = names or layer_names(a.shape[0] - 2)
        prof = relative_profile(a, b)
        for l, v in enumerate(prof):
            prof_rows.append({"pair_id": rp.pair.pair_id, "prompt_id": rp.pair.prompt_id, "rung": rp.pair.rung,
                              "edit_kind": rp.pair.edit_kind, "erased_by_template": rp.erased, "layer": l,
                              "layer_name": names[l], "rel_dist": float(v)})
    # Along the generation: one greedy continuation per distinct side A, teacher-forced after both sides.
    forced: dict[tuple[int, ...], tuple[list[int], np.ndarray, np.ndarray]] = {}
    eos = loaded.info.eos_token_ids
    for rp in pairs:
        if rp.pair.rung == "identical" or rp.erased:
            continue
        if rp.ids_a not in forced:
            y = measure.greedy(model, rp.ids_a, cfg.max_new_tokens, eos)
            forced[rp.ids_a] = (y, *measure.teacher_forced(model, rp.ids_a, y))
        y, logp_a, s_a = forced[rp.ids_a]
        logp_b, s_b = measure.teacher_forced(model, rp.ids_b, y)
        d = np.linalg.norm(s_a - s_b, axis=1) / np.linalg.norm(s_a, axis=1)
        m_a, m_b = measure.margins(logp_a), measure.margins(logp_b)
        b_top = logp_b.argmax(axis=1)
        differs = [t for t in range(len(y)) if b_top[t] != y[t]]
        flip = differs[0] if differs else -1
        window = d[: flip + 1] if flip >= 0 else d
        g_pre, g_all = growth_rate(window), growth_rate(d)
        for t in range(d.size):
            step_rows.append({"pair_id": rp.pair.pair_id, "prompt_id": rp.pair.prompt_id, "rung": rp.pair.rung,
                              "step": t, "rel_dist": float(d[t]), "margin_a": float(m_a[t]), "margin_b": float(m_b[t]),
                              "b_follows": bool(t >= len(y) or b_top[t] == y[t])})
        pair_rows.append({
            "pair_id": rp.pair.pair_id, "prompt_id": rp.pair.prompt_id, "rung": rp.pair.rung, "n_steps": int(d.size),
            "flip_step": flip, "d0": float(d[0]), "d_at_flip": float(d[flip]) if flip >= 0 else float("nan"),
            "growth_pre_flip": g_pre.slope, "growth_pre_flip_endpoint": g_pre.endpoint, "growth_all": g_all.slope,
            "growth_steps": g_pre.n_steps, "zero_steps": g_pre.n_zero,
            "margin_a_at_flip": float(m_a[flip]) if flip >= 0 else float("nan"),
            "margin_b_at_flip": float(m_b[flip]) if flip >= 0 else float("nan"),
            # 1-based step for the shared percentile helper; the trace covers the steps that chose a token of y
            "flip_margin_percentile": first_divergence_margin_percentile(m_a[: len(y)], flip + 1) if flip >= 0 else float("nan"),
        })
    base: list[tuple[str, tuple[int, ...]]] = []
    for rp in pairs:
        if rp.pair.prompt_id not in [b[0] for b in base]:
            base.append((rp.pair.prompt_id, rp.ids_a))
    for pid, ids in base[: cfg.stretch_prompts]:
        for r in measure.stretching(model, ids, cfg.tol, cfg.max_iter):
            layer_rows.append({"prompt_id": pid, "n_tokens": len(ids), **r})
    return {"profiles": pd.DataFrame(prof_rows), "steps": pd.DataFrame(step_rows), "pairs": pd.DataFrame(pair_rows),
            "layers": pd.DataFrame(layer_rows)}


def _median_ci(values: pd.Series, groups: pd.Series) -> dict[str, Any]:
    ok = values.notna()
    if not ok.any():
        return {"median": None, "ci": [None, None], "n_prompts": 0, "n_pairs": 0, "n_missing": int((~ok).sum())}
    s = summarize_profiles(values[ok].to_numpy()[:, None], groups[ok].tolist())
    return {"median": s.median[0], "ci": [s.ci_low[0], s.ci_high[0]], "n_prompts": int(s.n_prompts[0]),
            "n_pairs": s.n_pairs, "n_missing": int((~ok).sum())}


def summarize_model(tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    prof, pairs, layers = tables["profiles"], tables["pairs"], tables["layers"]
    out: dict[str, Any] = {"profiles": {}, "stretching": {}, "generation": {}}
    kept = prof[~prof["erased_by_template"]] if len(prof) else prof
    if len(prof):
        out["layer_names"] = prof.drop_duplicates("layer").sort_values("layer")["layer_name"].tolist()
        out["n_pairs_erased_by_template"] = int(prof[prof["erased_by_template"]]["pair_id"].nunique())
        ident = prof[prof["rung"] == "identical"]["rel_dist"]
        out["identical_rung_exact_zero"] = bool(len(ident) and (ident == 0).all())
    for rung in [r for r in RUNGS if len(kept) and r in set(kept["rung"])]:
        wide = kept[kept["rung"] == rung].pivot(index="pair_id", columns="layer", values="rel_dist")
        pid = kept[kept["rung"] == rung].drop_duplicates("pair_id").set_index("pair_id").loc[wide.index, "prompt_id"]
        s = summarize_profiles(wide.to_numpy(), pid.tolist())
        out["profiles"][rung] = {"median": s.median, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_prompts": s.n_prompts,
                                 "n_pairs": s.n_pairs, "growth_layer": s.growth_layer, "growth": s.growth}
    if len(layers):
        for name, g in layers.groupby("map", sort=False):
            out["stretching"][name] = {
                "sigma_median": float(g["sigma"].median()), "sigma_min": float(g["sigma"].min()),
                "sigma_max": float(g["sigma"].max()), "sigma_rel_median": float(g["sigma_rel"].median()),
                "iterations_median": float(g["iterations"].median()), "n_converged": int(g["converged"].sum()),
                "n": int(len(g)), "residual_max": float(g["residual"].max()),
                "bound_holds": bool((g["sigma"] <= g["sigma_bound"] * (1 + 1e-4)).all()) if name == "product" else None,
            }
    if len(pairs):
        for rung, g in pairs.groupby("rung", sort=False):
            flipped = g[g["flip_step"] >= 0]
            out["generation"][rung] = {
                "n_pairs": int(len(g)), "n_flipped": int(len(flipped)),
                "growth_pre_flip": _median_ci(g["growth_pre_flip"], g["prompt_id"]),
                "growth_all": _median_ci(g["growth_all"], g["prompt_id"]),
                "flip_step_median": float(flipped["flip_step"].median()) if len(flipped) else None,
                "flip_margin_percentile_median": float(flipped["flip_margin_percentile"].median()) if len(flipped) else None,
                "d0_median": float(g["d0"].median()),
            }
    return out


def _measure_entry(entry: ModelEntry, cfg: StretchConfig, record: dict[str, Any]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """One model's tables (each with its ``model`` column) and its summary."""
    loaded = cfg.loader(entry, cfg.variant)
    record["info"] = dataclasses.asdict(loaded.info)
    tables = measure_model(loaded, cfg)
    for df in tables.values():
        if len(df):
            df.insert(0, "model", entry.name)
    summary = summarize_model(tables)
    del loaded
    gc.collect()
    return tables, summary


def run_stretch(cfg: StretchConfig):
    """Measure every model; a model that fails is recorded (exit 3) and the others go on."""
    from harness.stretch_study.report import render_stretch_html, render_stretch_markdown, stretch_figures, terminal_stretch

    validate(cfg)
    config = {"models": [m.model_dump() for m in cfg.models], "ladder": {"name": cfg.ladder.name, "source": cfg.ladder.source,
              "sha256": cfg.ladder.source_sha256}, **{k: v for k, v in dataclasses.asdict(cfg).items()
                                                      if k in ("max_prompts", "stretch_prompts", "max_new_tokens", "tol", "max_iter", "variant")}}
    with study_run("stretch", cfg.out, cfg.argv, config, threads=cfg.threads) as study:
        outcomes = study.measure_models(cfg.models, lambda entry, record: _measure_entry(entry, cfg, record),
                                        record_seconds=True)
        summary: dict[str, Any] = {"schema": SCHEMA, "config": config, "models": {
            o.entry.name: o.summary_entry(lambda r: r[1]) for o in outcomes}}
        frames = {k: [df for o in outcomes if o.error is None and len(df := o.result[0][k])]
                  for k in ("profiles", "steps", "pairs", "layers")}
        tables = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in frames.items()}
        run_dir = study.run_dir
        for k, df in tables.items():
            rundir.atomic_write_parquet(run_dir / f"stretch_{k}.parquet", df)
        summary = study.write_summary("stretch_summary.json", summary)
        figures = stretch_figures(summary, tables)
        for name, png in figures.items():
            rundir.atomic_write_bytes(run_dir / f"{name}.png", png)
        md = render_stretch_markdown(summary)
        rundir.atomic_write_text(run_dir / "stretch.md", md)
        rundir.atomic_write_text(run_dir / "stretch.html", render_stretch_html(md, figures))
    return StudyResult(run_dir, study.exit_code, summary, terminal_stretch(summary))
