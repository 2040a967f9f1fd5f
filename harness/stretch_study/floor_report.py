"""Text and figure of the floor study."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report.text import fmt_study as fmt
from harness.stretch_study.report import _plt, _png


def floor_figure(table: pd.DataFrame, models: pd.DataFrame) -> dict[str, bytes]:
    """``floor``: drift (tokens, KL both ways) and P against bit width per model; stretching vs drift growth."""
    if not len(table):
        return {}
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    for model, g in table.groupby("model", sort=False):
        g = g.sort_values("bits", ascending=False)
        ls = "--" if model.endswith("-randinit") else "-"
        x = np.log2(g["bits"].to_numpy(dtype=float))
        axes[0].plot(x, g["d_tokens"], ls, marker="o", label=model)
        axes[1].plot(x, g["kl_ref_tokens"], ls, marker="o", label=f"{model} (ref tokens)")
        axes[1].plot(x, g["kl_var_tokens"], ls, marker="x", alpha=0.6)
        axes[2].plot(x, g["p_tokens"], ls, marker="o", label=model)
    for ax, title in zip(axes[:3], ("drift D: token edit distance to bf16", "teacher-forced KL (o: ref tokens, x: variant's)",
                                    "perturbation distance P")):
        bits = sorted(set(table["bits"]), reverse=True)
        ax.set_xticks(np.log2(bits), [str(b) for b in bits])
        ax.invert_xaxis()
        ax.set_xlabel("weight bits")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[0].legend(fontsize=7)
    if len(models):
        axes[3].scatter(models["stretch_product_sigma_rel"], models["drift_growth_tokens"])
        for _, r in models.iterrows():
            axes[3].annotate(r["model"], (r["stretch_product_sigma_rel"], r["drift_growth_tokens"]), fontsize=7)
        axes[3].set_xlabel("end-to-end σ_rel at the prompt end (median)")
        axes[3].set_ylabel("drift growth (D per halving of bits)")
        axes[3].set_title("stretching vs drift growth", fontsize=9)
        axes[3].grid(alpha=0.3)
    return {"floor": _png(fig)}


def _ci(r: dict, col: str) -> str:
    return f"{fmt(r.get(col))} [{fmt(r.get(col + '_ci_low'))}, {fmt(r.get(col + '_ci_high'))}]"


def render_floor_markdown(summary: dict[str, Any]) -> str:
    lines = ["## Dynamical floor of quantization", "",
             "Per model × variant: P = token edit distance between the sides of perturbed pairs (identical and "
             "positive control left out); D = token edit distance between the variant's and bf16's output of the same "
             "prompt; KL(ref‖q) on bf16's greedy tokens and KL(q‖ref) on the variant's own tokens (nats, mean over "
             "generated positions) with the same-top-1 shares. Means over base prompts with 95% bootstrap CIs "
             "(prompts resampled). Collapse: P(q) < P(bf16) and D(q) > P(q).", "",
             "| model | variant | bits (per parameter in the file) | P | D | KL(ref‖q), ref tokens | KL(q‖ref), q's tokens | same top-1 (ref / q tokens) | answer flips vs bf16 | accuracy | prompts/pairs | collapse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.get("table", []):
        lines.append(f"| {r['model']} | {r['variant']} | {r['bits']} ({fmt(r.get('bits_effective'))}) | {_ci(r, 'p_tokens')} | {_ci(r, 'd_tokens')} | "
                     f"{_ci(r, 'kl_ref_tokens')} | {_ci(r, 'kl_var_tokens')} | {fmt(r['same_top1_ref_tokens'])} / "
                     f"{fmt(r['same_top1_var_tokens'])} | {_ci(r, 'answer_flip')} | {fmt(r.get('correct'))} | {r['n_prompts']}/{r['n_pairs']} | {fmt(r.get('collapse'))} |")
    lines += ["", "| model | control | end-to-end σ | σ_rel | max block σ_rel | drift growth (D / halving) | "
                  "drift growth (KL / halving) | variants failed |", "|---|---|---|---|---|---|---|---|"]
    for m in summary.get("models", []):
        lines.append(f"| {m['model']} | {fmt(m['control'])} | {fmt(m['stretch_product_sigma'])} | {fmt(m['stretch_product_sigma_rel'])} | "
                     f"{fmt(m['stretch_block_sigma_rel_max'])} | {fmt(m['drift_growth_tokens'])} | {fmt(m['drift_growth_kl'], 4)} | "
                     f"{m['variants_failed'] or '–'} |")
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
              "by construction here (one deterministic decode); the run's identical rung is where nondeterminism "
              "is measured.", ""]
    return "\n".join(lines)


def terminal_floor(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<22}{'variant':<13}{'bits':>5}{'P':>8}{'D':>8}{'KL ref':>10}{'KL var':>10}"]
    for r in summary.get("table", []):
        lines.append(f"{r['model']:<22}{r['variant']:<13}{r['bits']:>5}{fmt(r['p_tokens']):>8}{fmt(r['d_tokens']):>8}"
                     f"{fmt(r['kl_ref_tokens'], 4):>10}{fmt(r['kl_var_tokens'], 4):>10}")
    for scope, cs in summary.get("rank_correlation", {}).items():
        for col, c in cs.items():
            lines.append(f"Spearman(stretching, {col}), {scope}: {fmt(c['rho'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}] (n = {c['n']})")
    return "\n".join(lines)
