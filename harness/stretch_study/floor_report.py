"""Text and figure of the floor study."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report.text import fmt_study as fmt
from harness.stretch_study.floor_contrast import verdict_lines
from harness.stretch_study.report import _plt, _png


def _bits_axis(ax, bits) -> None:
    ticks = sorted(set(float(b) for b in bits if np.isfinite(b)), reverse=True)
    ax.set_xticks(np.log2(ticks), [f"{b:.3g}" for b in ticks], fontsize=7, rotation=45)
    ax.invert_xaxis()
    ax.set_xlabel("weight bits per parameter (the file's, for a GGUF)", fontsize=8)
    ax.grid(alpha=0.3)


def _errorbar(ax, x, g, col, label, **kw) -> None:
    y = g[col].to_numpy(dtype=float)
    lo, hi = g[f"{col}_ci_low"].to_numpy(dtype=float), g[f"{col}_ci_high"].to_numpy(dtype=float)
    ax.errorbar(x, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], marker="o", capsize=3, label=label, **kw)


def floor_figure(table: pd.DataFrame, models: pd.DataFrame, contrast: pd.DataFrame | None = None) -> dict[str, bytes]:
    """``floor``: the static view (KL, same top-1, D) above the dynamical one (P, ΔP vs bf16, accuracy, flips) per
    bit width, 95% CIs over prompts; stretching vs drift growth across models."""
    if not len(table):
        return {}
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(22, 9))
    eff = table.set_index(["model", "variant"])["bits_effective"].astype(float)
    for model, g in table.groupby("model", sort=False):
        g = g.sort_values(["bits_effective", "variant"], ascending=False)
        ls = "--" if model.endswith("-randinit") else "-"
        x = np.log2(g["bits_effective"].to_numpy(dtype=float))
        axes[0, 0].plot(x, g["kl_ref_tokens"], ls, marker="o", label=f"{model} KL(ref‖q), ref tokens")
        axes[0, 0].plot(x, g["kl_var_tokens"], ls, marker="x", alpha=0.6, label=f"{model} KL(q‖ref), q's tokens")
        axes[0, 1].plot(x, g["same_top1_ref_tokens"], ls, marker="o", label=model)
        _errorbar(axes[0, 2], x, g, "d_tokens", model, ls=ls)
        _errorbar(axes[1, 0], x, g, "p_tokens", f"{model} P", ls=ls)
        _errorbar(axes[1, 0], x, g, "identical_repeat", f"{model} identical rung, decoded again", ls=":")
        _errorbar(axes[1, 2], x, g, "correct", f"{model} accuracy", ls=ls)
        _errorbar(axes[1, 3], x, g, "answer_flip", f"{model} answer flips vs bf16", ls=ls)
        for xi, v in zip(x, g["variant"]):
            axes[0, 0].annotate(v.replace("@llamacpp", ""), (xi, float(g.loc[g["variant"] == v, "kl_ref_tokens"].iloc[0])),
                                fontsize=6, rotation=30)
    if contrast is not None and len(contrast):
        for model, g in contrast.groupby("model", sort=False):
            g = g.assign(bits_effective=[eff.get((model, v), np.nan) for v in g["variant"]])
            g = g.sort_values(["bits_effective", "variant"], ascending=False)
            x = np.log2(g["bits_effective"].to_numpy(dtype=float))
            y = g["dp_ref_mean"].to_numpy(dtype=float)
            axes[1, 1].errorbar(x, y, yerr=[np.clip(y - g["dp_ref_ci_low"], 0, None), np.clip(g["dp_ref_ci_high"] - y, 0, None)],
                                marker="o", capsize=3, label=f"{model} ΔP vs bf16")
            axes[1, 1].fill_between(x, -g["dp_ref_mde"], g["dp_ref_mde"], alpha=0.15, label=f"{model} ± MDE (80% power)")
        axes[1, 1].axhline(0, color="k", lw=0.8)
    titles = {(0, 0): "static: teacher-forced KL (nats/position)", (0, 1): "static: same top-1 share (bf16's tokens)",
              (0, 2): "drift D: token edit distance to bf16", (1, 0): "dynamical: perturbation distance P",
              (1, 1): "dynamical: P(q) − P(bf16), paired per prompt", (1, 2): "answer accuracy",
              (1, 3): "answer flips against bf16"}
    for (i, j), title in titles.items():
        _bits_axis(axes[i, j], table["bits_effective"].astype(float))
        axes[i, j].set_title(title, fontsize=9)
        axes[i, j].legend(fontsize=6)
    axes[0, 0].set_yscale("symlog", linthresh=1e-4)
    if len(models):
        axes[0, 3].scatter(models["stretch_product_sigma_rel"], models["drift_growth_tokens"])
        for _, r in models.iterrows():
            axes[0, 3].annotate(r["model"], (r["stretch_product_sigma_rel"], r["drift_growth_tokens"]), fontsize=7)
        axes[0, 3].set_xlabel("end-to-end σ_rel at the prompt end (median)")
        axes[0, 3].set_ylabel("drift growth (D per halving of bits)")
        axes[0, 3].set_title("stretching vs drift growth", fontsize=9)
        axes[0, 3].grid(alpha=0.3)
    fig.tight_layout()
    return {"floor": _png(fig)}


def _delta(r: dict, name: str, digits: int = 3) -> str:
    if r.get(f"{name}_mean") is None or not np.isfinite(r.get(f"{name}_mean", np.nan)):
        return "–"
    star = "*" if r.get(f"{name}_moves") else ""
    return (f"{fmt(r[f'{name}_mean'], digits)}{star} [{fmt(r[f'{name}_ci_low'], digits)}, {fmt(r[f'{name}_ci_high'], digits)}], "
            f"MDE {fmt(r[f'{name}_mde'], digits)}")


def _ci(r: dict, col: str) -> str:
    return f"{fmt(r.get(col))} [{fmt(r.get(col + '_ci_low'))}, {fmt(r.get(col + '_ci_high'))}]"


def render_floor_markdown(summary: dict[str, Any]) -> str:
    lines = ["## Dynamical floor of quantization", "",
             "Per model × variant: P = token edit distance between the sides of perturbed pairs (identical and "
             "positive control left out); D = token edit distance between the variant's and bf16's output of the same "
             "prompt; KL(ref‖q) on bf16's greedy tokens and KL(q‖ref) on the variant's own tokens (nats, mean over "
             "generated positions) with the same-top-1 shares. Means over base prompts with 95% bootstrap CIs "
             "(prompts resampled). Collapse: P(q) < P(bf16) and D(q) > P(q).", "",
             "| model | variant | bits (per parameter in the file) | P | D | KL(ref‖q), ref tokens | KL(q‖ref), q's tokens | same top-1 (ref / q tokens) | answer flips vs bf16 | accuracy | identical rung decoded again | prompts/pairs | collapse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.get("table", []):
        lines.append(f"| {r['model']} | {r['variant']} | {r['bits']} ({fmt(r.get('bits_effective'))}) | {_ci(r, 'p_tokens')} | {_ci(r, 'd_tokens')} | "
                     f"{_ci(r, 'kl_ref_tokens')} | {_ci(r, 'kl_var_tokens')} | {fmt(r['same_top1_ref_tokens'])} / "
                     f"{fmt(r['same_top1_var_tokens'])} | {_ci(r, 'answer_flip')} | {_ci(r, 'correct')} | {_ci(r, 'identical_repeat')} | {r['n_prompts']}/{r['n_pairs']} | {fmt(r.get('collapse'))} |")
    lines += ["", "| model | control | end-to-end σ | σ_rel | max block σ_rel | drift growth (D / halving) | "
                  "drift growth (KL / halving) | variants failed |", "|---|---|---|---|---|---|---|---|"]
    for m in summary.get("models", []):
        lines.append(f"| {m['model']} | {fmt(m['control'])} | {fmt(m['stretch_product_sigma'])} | {fmt(m['stretch_product_sigma_rel'])} | "
                     f"{fmt(m['stretch_block_sigma_rel_max'])} | {fmt(m['drift_growth_tokens'])} | {fmt(m['drift_growth_kl'], 4)} | "
                     f"{m['variants_failed'] or '–'} |")
    lines += ["", "Paired contrasts per base prompt (mean [95% CI], MDE at 80% power; * = the CI excludes 0). ΔP: P(q) − "
              "P(bf16) on the same pairs; ΔP floor: against the engine floor f16@llamacpp; ΔKL and Δ same top-1: "
              "against the KL baseline (the engine floor for a GGUF when the run has one, else bf16 itself); "
              "Δ accuracy against bf16.", "",
              "| model | variant | bits | ΔP vs bf16 | ΔP vs engine floor | KL baseline | ΔKL | Δ same top-1 | Δ accuracy |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.get("contrast", []):
        lines.append(f"| {r['model']} | {r['variant']} | {r['bits']} | {_delta(r, 'dp_ref')} | {_delta(r, 'dp_floor')} | "
                     f"{r['kl_baseline']} | {_delta(r, 'dkl_floor', 4)} | {_delta(r, 'dtop1_floor')} | {_delta(r, 'dacc_ref')} |")
    lines.append("")
    lines += verdict_lines(summary.get("verdict", {}))
    lines.append("")
    for scope, cs in summary.get("rank_correlation", {}).items():
        for col, c in cs.items():
            lines.append(f"- Spearman(end-to-end σ_rel, {col}), {scope.replace('_', ' ')}: {fmt(c['rho'])} "
                         f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}], n = {c['n']} models ({c['note']}).")
    for model, err in summary.get("failed", {}).items():
        lines.append(f"- {model}: FAILED {err}")
    for model, d in summary.get("variants_info", {}).items():
        for v, err in d.items():
            lines.append(f"- {model} {v}: not measured: {err}")
    trained = [m for m in summary.get("models", []) if not m.get("control")]
    lines += ["", f"What this can and cannot answer: {len(trained)} trained model(s). A rank correlation over so few "
              "units has almost no resolution, and one taken across trained models and their random-init controls "
              "mostly separates the two groups (untrained models have near-uniform next-token distributions, so "
              "their KL is small whatever they stretch); it cannot say whether models that stretch less drift less. "
              "Run it on a panel of trained models of several families and sizes (a GPU) for that. D of bf16 is 0 "
              "by construction here (one decode per distinct prompt); the identical rung decoded a second time is the "
              "study's determinism check, the run's identical rung the full one (batches, threads).", ""]
    return "\n".join(lines)


def terminal_floor(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<22}{'variant':<17}{'bits':>5}{'P':>8}{'D':>8}{'KL ref':>10}{'KL var':>10}{'flips':>7}"]
    for r in summary.get("table", []):
        lines.append(f"{r['model']:<22}{r['variant']:<17}{r['bits']:>5}{fmt(r['p_tokens']):>8}{fmt(r['d_tokens']):>8}"
                     f"{fmt(r['kl_ref_tokens'], 4):>10}{fmt(r['kl_var_tokens'], 4):>10}{fmt(r.get('answer_flip')):>7}")
    lines += verdict_lines(summary.get("verdict", {}))
    for scope, cs in summary.get("rank_correlation", {}).items():
        for col, c in cs.items():
            lines.append(f"Spearman(stretching, {col}), {scope}: {fmt(c['rho'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}] (n = {c['n']})")
    return "\n".join(lines)
