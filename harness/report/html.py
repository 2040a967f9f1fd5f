"""report.html: one self-contained file (tables, and figures inlined as base64 PNGs).

Nothing in the page is fetched: no scripts, fonts, stylesheets or images from
anywhere else, so the file can be mailed, archived as a CI artifact or opened
offline. The tables are those of the Markdown report (``report_tables``); the
figures are drawn here with matplotlib's Agg canvas (no display, no pyplot
global state). A figure that cannot be drawn is replaced by a sentence saying
why, never silently dropped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from harness.ladder.records import RUNGS
from harness.score.metrics.edit_distance import levenshtein_trajectory
from harness.report.markdown import Table, report_tables, run_lines
from harness.score.pairs import TRIVIAL_SHIFT

REPORT_HTML = "report.html"
DIVERGENT_PAIRS = 8
MARGIN_WINDOW = 8
"""Steps shown either side of the first divergence in the margin traces."""
CONTROL_RUNGS = ("identical", "positive_control")
"""Controls, not perturbations: left out of "most divergent pairs"."""
_GEN_KEY = ["model", "variant", "prompt_key", "replicate"]


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    caption: str
    png: bytes | None
    missing: str = ""
    """Why the figure is not drawn; empty when it is."""


def _not_drawn(key: str, title: str, why: str) -> Figure:
    return Figure(key, title, "", None, why)


def _png(fig: MplFigure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/date metadata: the same tables give byte-identical images.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _rung_order(rung: str) -> int:
    return RUNGS.index(rung) if rung in RUNGS else len(RUNGS)


def _longest(pairs: pd.DataFrame) -> int:
    return int(pairs["length"].max())


def _series_label(model: str, variant: str, n_variants: int) -> str:
    return model if n_variants == 1 else f"{model} ({variant})"


# --- per-rung distances ------------------------------------------------------


def fig_rung_distances(summary: dict[str, Any]) -> Figure:
    key, title = "fig_rungs", "Embedding distance per rung, with 95% bootstrap CIs"
    cells = summary.get("cells") or []
    if not cells:
        return _not_drawn(key, title, "no pairs were scored, so there are no per-rung distances")
    lengths = sorted({c["length"] for c in cells})
    rungs = sorted({c["rung"] for c in cells}, key=_rung_order)
    series = sorted({(c["model"], c["variant"]) for c in cells})
    n_variants = len({v for _, v in series})
    fig = MplFigure(figsize=(11, 3.6 * len(lengths)))
    axes = fig.subplots(len(lengths), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(series))
    for ax, L in zip(axes, lengths):
        for k, (model, variant) in enumerate(series):
            cs = sorted((c for c in cells if c["length"] == L and c["model"] == model and c["variant"] == variant),
                        key=lambda c: _rung_order(c["rung"]))
            if not cs:
                continue
            x = np.array([rungs.index(c["rung"]) for c in cs]) - 0.4 + width * (k + 0.5)
            m = np.array([c["emb_dist"]["mean"] for c in cs])
            lo = np.array([c["emb_dist"]["ci95"][0] for c in cs])
            hi = np.array([c["emb_dist"]["ci95"][1] for c in cs])
            ax.errorbar(x, m, yerr=np.vstack([m - lo, hi - m]), fmt="o", capsize=3, ms=4,
                        label=_series_label(model, variant, n_variants))
        ax.set_xticks(range(len(rungs)), rungs, rotation=20, ha="right")
        ax.set_ylabel("embedding distance")
        ax.set_title(f"first {L} generated tokens", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    boot = summary.get("bootstrap", {})
    return Figure(key, title, f"Mean over the pairs of each rung; bars are 95% bootstrap CIs resampling "
                              f"{boot.get('unit', 'pair')}s ({boot.get('method', 'percentile')}, {boot.get('resamples')} "
                              f"resamples, seed {boot.get('seed')}); no bar where a cell has one prompt. Clusters are in "
                              "the tables.", _png(fig))


# --- heatmap -----------------------------------------------------------------


def fig_heatmap(pairs: pd.DataFrame) -> Figure:
    key, title = "fig_heatmap", "Mean embedding distance, model × edit kind"
    if pairs.empty:
        return _not_drawn(key, title, "pairs.parquet has no rows")
    L = _longest(pairs)
    p = pairs[pairs["length"] == L]
    table = p.groupby(["model", "variant", "rung", "edit_kind"])["emb_dist"].mean().reset_index()
    cols = sorted({(r, e) for r, e in zip(table["rung"], table["edit_kind"])}, key=lambda re_: (_rung_order(re_[0]), re_[1]))
    rows = sorted({(m, v) for m, v in zip(table["model"], table["variant"])})
    grid = np.full((len(rows), len(cols)), np.nan)
    for t in table.itertuples():
        grid[rows.index((t.model, t.variant)), cols.index((t.rung, t.edit_kind))] = t.emb_dist
    n_variants = len({v for _, v in rows})
    fig = MplFigure(figsize=(max(6.0, 0.5 * len(cols) + 3.0), max(2.5, 0.45 * len(rows) + 2.2)))
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(masked, aspect="auto", cmap=cmap, vmin=0.0, vmax=max(1e-9, float(np.nanmax(grid))))
    ax.set_xticks(range(len(cols)), [f"{r} / {e}" for r, e in cols], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [_series_label(m, v, n_variants) for m, v in rows], fontsize=9)
    if grid.size <= 300:  # values stay legible; larger panels rely on the colour bar
        vmax = np.nanmax(grid)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, label="mean embedding distance")
    fig.tight_layout()
    return Figure(key, title, f"At the longest length (L = {L}). Grey: no scored pair (the edit was dropped by the "
                              "token audit or does not exist in the ladder).", _png(fig))


# --- most divergent pairs: trajectories and margins ---------------------------


def most_divergent_pairs(pairs: pd.DataFrame, total: int = DIVERGENT_PAIRS) -> pd.DataFrame:
    """Each model x variant's most divergent perturbed (non-control) pairs at the longest length.

    Per model x variant rather than overall: the overall top would show only
    the least stable model, and the point of the figure is to compare how
    models diverge. Up to two pairs each, ``total`` in all.
    """
    if pairs.empty:
        return pairs
    L = _longest(pairs)
    c = pairs[(pairs["length"] == L) & ~pairs["rung"].isin(CONTROL_RUNGS) & (pairs["first_div"] > 0)]
    if c.empty:
        return c
    # Ties broken by name so the same run always shows the same pairs.
    keys, asc = ["tok_edit", "emb_dist", "model", "variant", "pair_id"], [False, False, True, True, True]
    c = c.sort_values(keys, ascending=asc)
    per = max(1, min(2, total // c.groupby(["model", "variant"]).ngroups))
    return c.groupby(["model", "variant"], sort=False).head(per).sort_values(keys, ascending=asc).head(total)


def _gen_lookup(gens: pd.DataFrame | None, needed: tuple[str, ...]) -> tuple[dict[tuple, int], str]:
    if gens is None or gens.empty:
        return {}, "generations.parquet is absent or empty"
    missing = [c for c in (*_GEN_KEY, *needed) if c not in gens.columns]
    if missing:
        return {}, f"generations.parquet lacks the column(s) {', '.join(missing)}"
    keys = zip(*(gens[c] for c in _GEN_KEY))
    return {(str(m), str(v), str(k), int(r)): i for i, (m, v, k, r) in enumerate(keys)}, ""


def _sides(row: Any, lookup: dict[tuple, int]) -> tuple[int, int] | None:
    # The second side of an identical pair is the independent re-decode (replicate 1); see decode.py.
    rep_b = 1 if row.rung == "identical" else 0
    a = lookup.get((str(row.model), str(row.variant), str(row.prompt_key_a), 0))
    b = lookup.get((str(row.model), str(row.variant), str(row.prompt_key_b), rep_b))
    return None if a is None or b is None else (a, b)


def _pair_label(row: Any, n_variants: int) -> str:
    return f"{_series_label(row.model, row.variant, n_variants)}: {row.pair_id}"


def fig_trajectories(pairs: pd.DataFrame, gens: pd.DataFrame | None) -> Figure:
    key, title = "fig_traj", "Levenshtein trajectories of the most divergent pairs"
    top = most_divergent_pairs(pairs)
    if top.empty:
        return _not_drawn(key, title, "no perturbed (non-control) pair diverged within the longest length")
    lookup, why = _gen_lookup(gens, ("gen_ids",))
    if why:
        return _not_drawn(key, title, why)
    L = _longest(pairs)
    n_variants = pairs["variant"].nunique()
    fig = MplFigure(figsize=(11, 4.5))
    ax = fig.subplots()
    unmatched = []
    for row in top.itertuples():
        sides = _sides(row, lookup)
        if sides is None:
            unmatched.append(row.pair_id)
            continue
        a = list(gens["gen_ids"].iloc[sides[0]])[:L]
        b = list(gens["gen_ids"].iloc[sides[1]])[:L]
        d = levenshtein_trajectory(a, b)
        ax.plot(np.arange(1, len(d) + 1), d, lw=1.5, label=_pair_label(row, n_variants))
    if unmatched and len(unmatched) == len(top):
        return _not_drawn(key, title, f"no generation rows match the selected pairs ({', '.join(unmatched)})")
    ax.axhline(TRIVIAL_SHIFT, ls="--", color="grey", lw=1.2, label=f"trivial one-token shift (d = {TRIVIAL_SHIFT})")
    ax.set_xlabel("generated tokens t")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Lev(A[:t], B[:t])")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    caption = (f"Each model's non-control pairs with the largest token edit distance at L = {L} ({len(top)} in all). A trajectory that "
               f"stays near the dashed line is one output shifted by a token; one that climbs is a different text.")
    if unmatched:
        caption += f" Not drawn (no generation rows): {', '.join(unmatched)}."
    return Figure(key, title, caption, _png(fig))


def _margin(gens: pd.DataFrame, i: int) -> np.ndarray:
    return np.asarray(gens["trace_top1_logit"].iloc[i], dtype=np.float64) - np.asarray(gens["trace_top2_logit"].iloc[i], dtype=np.float64)


def fig_margins(pairs: pd.DataFrame, gens: pd.DataFrame | None) -> Figure:
    key, title = "fig_margins", "Per-step margins around the first divergence"
    top = most_divergent_pairs(pairs)
    if top.empty:
        return _not_drawn(key, title, "no perturbed (non-control) pair diverged within the longest length")
    lookup, why = _gen_lookup(gens, ("trace_top1_logit", "trace_top2_logit"))
    if why:
        return _not_drawn(key, title, why)
    rows = [(row, s) for row in top.itertuples() if (s := _sides(row, lookup)) is not None]
    if not rows:
        return _not_drawn(key, title, "no generation rows match the selected pairs")
    n_variants = pairs["variant"].nunique()
    ncols = min(3, len(rows))
    nrows = -(-len(rows) // ncols)
    fig = MplFigure(figsize=(11, 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (row, (ia, ib)) in zip(axes, rows):
        step = int(row.first_div) - 1  # first_div is 1-based; trace entry t chose generated token t+1
        for idx, name, color in ((ia, "A", "tab:blue"), (ib, "B", "tab:orange")):
            m = _margin(gens, idx)
            lo, hi = max(0, step - MARGIN_WINDOW), min(len(m), step + MARGIN_WINDOW + 1)
            ax.plot(np.arange(lo, hi) - step, m[lo:hi], marker="o", ms=3, lw=1.2, color=color, label=f"side {name}")
        ax.axvline(0, color="red", lw=1, ls=":")
        ax.set_title(_pair_label(row, n_variants), fontsize=8)
        ax.set_xlabel("step − first divergence", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("top-1 − top-2 logit", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    fig.tight_layout()
    return Figure(key, title, f"The same pairs; ±{MARGIN_WINDOW} steps around the first differing token (dotted). "
                              "A divergence at a near-zero margin is a near-tie tipping over; one at a large margin "
                              "means the prompt edit moved the model's preference outright.", _png(fig))


# --- drift: perturbation distance vs distance from the reference --------------


def fig_drift(summary: dict[str, Any]) -> Figure:
    """P (perturbation distance) against D (drift from the reference) per variant, from summary["drift"]."""
    key, title = "fig_drift", "Perturbation distance P vs drift from the reference D, per variant"
    table = summary.get("drift")
    if table is None:
        return _not_drawn(key, title, "summary.json has no drift table")
    if not table:
        return _not_drawn(key, title, "no pairs were scored, so there is no drift table")
    by_model: dict[str, set[str]] = {}
    for r in table:
        by_model.setdefault(r["model"], set()).add(r["variant"])
    if max(len(v) for v in by_model.values()) < 2:
        return _not_drawn(key, title, "every model ran with one variant: there is no drift to plot")
    L = max(r["length"] for r in table)
    rows = [r for r in table if r["length"] == L and len(by_model[r["model"]]) > 1]
    drawn = [r for r in rows if r["drift"] is not None]
    notes = [f"{r['model']} ({r['variant']}): no drift measured against {r['reference']}" for r in rows if r["drift"] is None]
    if not any(r["variant"] != r["reference"] for r in drawn):
        return _not_drawn(key, title, "no variant has a drift measurement against its reference: " + "; ".join(notes))
    fig = MplFigure(figsize=(8, 6))
    ax = fig.subplots()
    top = max(max(r["perturbation_distance"] for r in drawn), max(r["drift"] for r in drawn), 1e-3) * 1.15
    ax.plot([0, top], [0, top], ls="--", color="grey", lw=1, label="D = P")
    models = sorted({r["model"] for r in drawn})
    # The teacher-forced reading beside each variant's point: D saturates once outputs part, the KLD does not.
    tf = {(r["model"], r["variant"]): r for r in summary.get("tf_drift") or [] if r["length"] == L}
    for k, model in enumerate(models):
        color = f"C{k % 10}"
        mine = sorted((r for r in drawn if r["model"] == model), key=lambda r: (r["variant"] != r["reference"], r["variant"]))
        at = {r["variant"]: (r["drift"], r["perturbation_distance"]) for r in mine}
        for j, r in enumerate(mine):
            xy = (r["drift"], r["perturbation_distance"])
            ax.scatter(*xy, color=color, s=40, zorder=3, label=model if j == 0 else None)
            # Stacked labels: variants of one model often sit on the same point (identical outputs).
            t = tf.get((model, r["variant"]))
            label = r["variant"] + ("" if t is None else
                                    f"  (KLD {t['kl_mean']['mean']:.2g}, same top-1 {t['same_top1']['mean']:.0%})")
            ax.annotate(label, xy, textcoords="offset points", xytext=(6, 4 + 11 * j), fontsize=8, color=color)
            if r["variant"] != r["reference"] and r["reference"] in at:
                ax.annotate("", xy, at[r["reference"]], arrowprops={"arrowstyle": "->", "color": color, "lw": 1})
            if r["collapse"] is True or r["collapse"] == "collapse":  # True: a summary.json from before the CIs
                ax.scatter(*xy, s=170, facecolors="none", edgecolors="red", lw=1.5, zorder=4)
    ax.set_xlim(-0.02 * top, top)
    ax.set_ylim(-0.02 * top, top)
    ax.set_xlabel("D: embedding distance from the reference's output on the same prompt")
    ax.set_ylabel("P: mean embedding distance over perturbed pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")  # the variant labels sit above their points, at the top left
    fig.tight_layout()
    caption = (f"At L = {L}. Arrows go from each model's reference (bf16) to its variants. A variant that moves down "
               "(smaller P) while landing right of the diagonal (D > P) looks more stable only because it no longer "
               "tracks the reference: collapse (red rings: both shown by 95% prompt-level CIs, see the table). The reference's own D is its two independent decodes of "
               "the same prompts (0 when deterministic). P leaves out the identical rung and the positive control. "
               "In brackets: the variant's teacher-forced mean KL(reference ‖ variant) per position and same-top-1 "
               "share on the reference's tokens (see the teacher-forced table).")
    if notes:
        caption += " Not drawn: " + "; ".join(notes) + "."
    return Figure(key, title, caption, _png(fig))


# --- page --------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#1a1a1a;padding:0 16px}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ccc;padding-bottom:3px}
table{border-collapse:collapse;font-size:0.82em;margin:6px 0 12px} th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0} tr.alert td{background:#fde8e8;font-weight:600}
p.note{color:#444;font-size:0.88em} p.missing{color:#8a4b00;background:#fff4e0;padding:6px 10px;border-left:3px solid #e0a030}
p.empty{color:#555;font-style:italic} figure{margin:10px 0 18px} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.85em;color:#444;margin-top:4px} code{background:#f3f3f3;padding:0 3px}
"""

# Figures are placed after the table with this key.
_FIGURES_AFTER = {"distances": ("fig_rungs",), "separated": ("fig_heatmap", "fig_traj", "fig_margins"), "drift": ("fig_drift",)}


def _inline_md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _table_html(t: Table) -> str:
    parts = [f'<h2 id="{t.key}">{html.escape(t.title)}</h2>']
    if t.note:
        parts.append(f'<p class="note">{html.escape(t.note)}</p>')
    if not t.rows:
        parts.append(f'<p class="empty">{html.escape(t.empty)}</p>')
        return "\n".join(parts)
    parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
    for i, r in enumerate(t.rows):
        cls = ' class="alert"' if i in t.bold_rows else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _figure_html(f: Figure) -> str:
    head = f'<h2 id="{f.key}">{html.escape(f.title)}</h2>'
    if f.png is None:
        return f'{head}\n<p class="missing">Not drawn: {html.escape(f.missing)}.</p>'
    data = base64.b64encode(f.png).decode("ascii")
    return (f'{head}\n<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def _safe(key: str, title: str, draw: Callable[[], Figure]) -> Figure:
    # A plotting bug must not cost the user the whole report (the tables are
    # still right); the page says which figure failed and why.
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - reported in the page, not swallowed
        return _not_drawn(key, title, f"drawing failed: {type(exc).__name__}: {exc}")


def build_figures(summary: dict[str, Any], pairs: pd.DataFrame, gens: pd.DataFrame | None, memo=None) -> dict[str, Figure]:
    from harness.core.memo import Memo, b64, frame_digest, unb64

    memo = memo or Memo(None)
    parts = [json.dumps({k: summary.get(k) for k in ("cells", "drift", "tf_drift")}, sort_keys=True, default=str),
             frame_digest(pairs), frame_digest(gens)]
    return memo.get(
        "figures", parts, lambda: _draw_figures(summary, pairs, gens),
        encode=lambda figs: [{**f.__dict__, "png": b64(f.png)} for f in figs.values()],
        decode=lambda rows: {r["key"]: Figure(**{**r, "png": unb64(r["png"])}) for r in rows},
    )


def _draw_figures(summary: dict[str, Any], pairs: pd.DataFrame, gens: pd.DataFrame | None) -> dict[str, Figure]:
    figs = [
        _safe("fig_rungs", "Embedding distance per rung", lambda: fig_rung_distances(summary)),
        _safe("fig_heatmap", "Mean embedding distance, model × edit kind", lambda: fig_heatmap(pairs)),
        _safe("fig_traj", "Levenshtein trajectories", lambda: fig_trajectories(pairs, gens)),
        _safe("fig_margins", "Per-step margins", lambda: fig_margins(pairs, gens)),
        _safe("fig_drift", "Drift", lambda: fig_drift(summary)),
    ]
    return {f.key: f for f in figs}


def render_html(summary: dict[str, Any], manifest: dict[str, Any], pairs: pd.DataFrame,
                gens: pd.DataFrame | None, memo=None) -> str:
    figures = build_figures(summary, pairs, gens, memo)
    body = ["<h1>stabprobe report</h1>", "<ul>" + "".join(f"<li>{_inline_md(x)}</li>" for x in run_lines(summary, manifest)) + "</ul>"]
    placed: set[str] = set()
    for t in report_tables(summary, manifest):
        body.append(_table_html(t))
        for k in _FIGURES_AFTER.get(t.key, ()):
            body.append(_figure_html(figures[k]))
            placed.add(k)
    # A figure whose anchor table is absent (e.g. a summary without a drift table) still appears.
    body += [_figure_html(f) for k, f in figures.items() if k not in placed]
    skipped = manifest.get("config", {}).get("ladder", {}).get("skipped_edits", 0)
    body.append(f'<p class="note">Edits not applicable to their prompt (listed in the manifest): {html.escape(str(skipped))}.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>stabprobe report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
