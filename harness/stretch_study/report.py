"""Text, tables and figures of the stretch study (markdown, one self-contained HTML, PNGs)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd

from harness.ladder.records import RUNGS
from harness.report.text import fmt_study as fmt


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok_models(summary: dict[str, Any]) -> list[str]:
    return [n for n, m in summary.get("models", {}).items() if m.get("status") == "ok"]


def stretch_figures(summary: dict[str, Any], tables: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """``stretch_profiles`` (median profile per rung, CI bands), ``stretch_layers`` (σ per block), ``stretch_generation``."""
    plt = _plt()
    names = _ok_models(summary)
    if not names:
        return {}
    out = {}
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        m = summary["models"][name]
        layers = m.get("layer_names", [])
        for rung in [r for r in RUNGS if r in m["profiles"] and r != "identical"]:
            p = m["profiles"][rung]
            x = np.arange(len(p["median"]))
            y = np.array(p["median"], dtype=float)
            line, = ax.plot(x, y, marker="o", ms=3, label=rung)
            ax.fill_between(x, np.array(p["ci_low"], dtype=float), np.array(p["ci_high"], dtype=float), alpha=0.15, color=line.get_color())
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xticks(range(len(layers)), [s.replace("block_", "b") for s in layers], rotation=45, fontsize=7)
        ax.set_title(f"{name}: ‖h_l(A)−h_l(B)‖/‖h_l(A)‖ at prompt end", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    out["stretch_profiles"] = _png(fig)
    layers = tables.get("layers")
    if layers is not None and len(layers):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, g in layers.groupby("model", sort=False):
            per = g[~g["map"].str.startswith("product")].groupby("map", sort=False)
            labels = list(per.groups)
            axes[0].plot(labels, per["sigma"].median().loc[labels], marker="o", label=name)
            axes[1].plot(labels, per["sigma_rel"].median().loc[labels], marker="o", label=name)
        for ax, t in zip(axes, ("σ_max of the block Jacobian (median over prompts)", "σ_rel = σ·‖x‖/‖f(x)‖")):
            ax.set_yscale("log")
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_title(t, fontsize=9)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        out["stretch_layers"] = _png(fig)
    steps = tables.get("steps")
    if steps is not None and len(steps):
        fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 5.5), squeeze=False, sharex=True)
        for j, name in enumerate(names):
            s = steps[steps["model"] == name]
            for rung in [r for r in RUNGS if r in set(s["rung"])]:
                g = s[s["rung"] == rung]
                with np.errstate(divide="ignore"):
                    logd = np.log(g["rel_dist"].where(g["rel_dist"] > 0))
                axes[0][j].plot(logd.groupby(g["step"]).median(), label=rung)
            med_margin = s.groupby("step")["margin_a"].median()
            axes[1][j].plot(med_margin.index, med_margin.values, color="k", label="margin of A (median)")
            axes[0][j].set_title(f"{name}: median ln d_t along A's greedy tokens", fontsize=9)
            axes[1][j].set_xlabel("generated step t")
            axes[1][j].set_ylabel("top-1 − top-2 log-prob")
            for ax in axes[:, j]:
                ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        out["stretch_generation"] = _png(fig)
    return out


def _ci(c: dict | None) -> str:
    if not c or c.get("median") is None:
        return "–"
    lo, hi = c["ci"]
    return f"{fmt(c['median'])} [{fmt(lo)}, {fmt(hi)}]"


def render_stretch_markdown(summary: dict[str, Any]) -> str:
    lines = ["## Per-layer stretching", "",
             "Layer profile: ‖h_l(A) − h_l(B)‖ / ‖h_l(A)‖ at the prompt-end position, l = embeddings … final norm; "
             "cells are the median over base prompts of each prompt's mean profile with a 95% bootstrap CI "
             "(base prompts resampled). Pairs the template erased are left out (counted). Stretching: σ_max of "
             "∂h_l[T]/∂h_{l−1}[T] with every other position held at the clean pass (power iteration, JVP/VJP); "
             "σ_rel = σ·‖h_{l−1}‖/‖h_l‖ is the gain of a relative perturbation. Generation: d_t on the final-norm "
             "state along A's greedy tokens; growth = slope of ln d_t per step up to B's first flip.", ""]
    for name, m in summary.get("models", {}).items():
        lines += [f"### {name}", ""]
        if m.get("status") != "ok":
            lines += [f"FAILED: {m.get('error')}", ""]
            continue
        layers = m.get("layer_names", [])
        lines.append(f"Identical rung exactly 0 at every layer: {fmt(m.get('identical_rung_exact_zero'))}; "
                     f"pairs erased by the template: {m.get('n_pairs_erased_by_template', 0)}.")
        lines += ["", "| rung | prompts/pairs | " + " | ".join(layers) + " | grows most at |",
                  "|---|---|" + "---|" * len(layers) + "---|"]
        for rung, p in m["profiles"].items():
            cells = [f"{fmt(p['median'][i])} [{fmt(p['ci_low'][i])}, {fmt(p['ci_high'][i])}]" for i in range(len(layers))]
            g = p["growth_layer"]
            where = f"{layers[g]} (+{fmt(p['growth'])})" if g is not None and g > 0 and (p["growth"] or 0) > 0 else "–"
            lines.append(f"| {rung} | {max(p['n_prompts'] or [0])}/{p['n_pairs']} | " + " | ".join(cells) + f" | {where} |")
        lines += ["", "| map | σ median (min–max) | σ_rel median | iterations (median) | converged | max residual |",
                  "|---|---|---|---|---|---|"]
        for mp, s in m["stretching"].items():
            extra = "" if s.get("bound_holds") is None else f" (≤ ∏ block σ: {fmt(s['bound_holds'])})"
            lines.append(f"| {mp} | {fmt(s['sigma_median'])} ({fmt(s['sigma_min'])}–{fmt(s['sigma_max'])}){extra} | "
                         f"{fmt(s['sigma_rel_median'])} | {fmt(s['iterations_median'], 0)} | {s['n_converged']}/{s['n']} | "
                         f"{fmt(s['residual_max'], 2)} |")
        lines += ["", "| rung | pairs | B left A's path | growth/step before the flip | growth/step, all steps | "
                      "flip step (median) | A's margin percentile at the flip | d_0 (median) |",
                  "|---|---|---|---|---|---|---|---|"]
        for rung, g in m["generation"].items():
            lines.append(f"| {rung} | {g['n_pairs']} | {g['n_flipped']} | {_ci(g['growth_pre_flip'])} | {_ci(g['growth_all'])} | "
                         f"{fmt(g['flip_step_median'], 1)} | {fmt(g['flip_margin_percentile_median'], 1)} | {fmt(g['d0_median'])} |")
        lines.append("")
    lines += ["What this does not show: σ is a local, first-order quantity at one position with the past frozen; "
              "it bounds how an infinitesimal change of that position's stream grows, not how a token edit (a finite "
              "change at several positions) or a quantization error propagates. The demo models are ~1M-parameter "
              "toys; nothing here transfers to the panel models without running it on them.", ""]
    return "\n".join(lines)


def terminal_stretch(summary: dict[str, Any]) -> str:
    lines = []
    for name, m in summary.get("models", {}).items():
        if m.get("status") != "ok":
            lines.append(f"{name}: FAILED {m.get('error')}")
            continue
        prod = m["stretching"].get("product", {})
        grow = {r: p["growth_layer"] for r, p in m["profiles"].items() if r != "identical"}
        layers = m.get("layer_names", [])
        where = ", ".join(f"{r}→{layers[g]}" for r, g in grow.items() if g is not None and g > 0)
        lines.append(f"{name}: end-to-end σ {fmt(prod.get('sigma_median'))} (σ_rel {fmt(prod.get('sigma_rel_median'))}); "
                     f"profile grows most at: {where}")
    return "\n".join(lines)


def markdown_to_html(md: str, figures: dict[str, bytes], title: str) -> str:
    """Headings, paragraphs and pipe tables of our own markdown, figures inlined as base64 PNGs."""
    body: list[str] = []
    table: list[str] = []

    def flush():
        if not table:
            return
        rows = [r.strip().strip("|").split(" | ") for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
        body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                    + "</tbody></table>")
        table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(name)}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 5px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def render_stretch_html(md: str, figures: dict[str, bytes]) -> str:
    return markdown_to_html(md, figures, "stabprobe stretch")
