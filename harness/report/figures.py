"""The figures of report.html, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each ``fig_*`` returns a :class:`Figure`: a PNG, or the sentence that says why it
was not drawn (too few pairs, no generations table), never nothing.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from harness.ladder.records import CONTROL_RUNGS, NOISE_FLOOR, rung_order
from harness.score.metrics.edit_distance import levenshtein_trajectory
from harness.report.records import Figure
from harness.score.pairs import TRIVIAL_SHIFT

DIVERGENT_PAIRS = 8
MARGIN_WINDOW = 8
"""Steps shown either side of the first divergence in the margin traces."""
_GEN_KEY = ["model", "variant", "prompt_key", "replicate"]


def not_drawn(key: str, title: str, why: str) -> Figure:
    return Figure(key, title, "", None, why)


def _png(fig: MplFigure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/date metadata: the same tables give byte-identical images.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _rung_order(rung: str) -> int:
    return rung_order(rung)


def _longest(pairs: pd.DataFrame) -> int:
    return int(pairs["length"].max())


def _series_label(model: str, variant: str, n_variants: int) -> str:
    return model if n_variants == 1 else f"{model} ({variant})"


# --- per-rung distances ------------------------------------------------------


def fig_rung_distances(summary: dict[str, Any]) -> Figure:
    key, title = "fig_rungs", "Embedding distance per rung, with 95% bootstrap CIs"
    cells = summary.get("cells") or []
    if not cells:
        return not_drawn(key, title, "no pairs were scored, so there are no per-rung distances")
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
        return not_drawn(key, title, "pairs.parquet has no rows")
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
    # Controls, not perturbations (the noise floor, the positive control): left out of "most divergent pairs".
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
    rep_b = 1 if row.rung == NOISE_FLOOR else 0
    a = lookup.get((str(row.model), str(row.variant), str(row.prompt_key_a), 0))
    b = lookup.get((str(row.model), str(row.variant), str(row.prompt_key_b), rep_b))
    return None if a is None or b is None else (a, b)


def _pair_label(row: Any, n_variants: int) -> str:
    return f"{_series_label(row.model, row.variant, n_variants)}: {row.pair_id}"


def fig_trajectories(pairs: pd.DataFrame, gens: pd.DataFrame | None) -> Figure:
    key, title = "fig_traj", "Levenshtein trajectories of the most divergent pairs"
    top = most_divergent_pairs(pairs)
    if top.empty:
        return not_drawn(key, title, "no perturbed (non-control) pair diverged within the longest length")
    lookup, why = _gen_lookup(gens, ("gen_ids",))
    if why:
        return not_drawn(key, title, why)
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
        return not_drawn(key, title, f"no generation rows match the selected pairs ({', '.join(unmatched)})")
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
        return not_drawn(key, title, "no perturbed (non-control) pair diverged within the longest length")
    lookup, why = _gen_lookup(gens, ("trace_top1_logit", "trace_top2_logit"))
    if why:
        return not_drawn(key, title, why)
    rows = [(row, s) for row in top.itertuples() if (s := _sides(row, lookup)) is not None]
    if not rows:
        return not_drawn(key, title, "no generation rows match the selected pairs")
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
        return not_drawn(key, title, "summary.json has no drift table")
    if not table:
        return not_drawn(key, title, "no pairs were scored, so there is no drift table")
    by_model: dict[str, set[str]] = {}
    for r in table:
        by_model.setdefault(r["model"], set()).add(r["variant"])
    if max(len(v) for v in by_model.values()) < 2:
        return not_drawn(key, title, "every model ran with one variant: there is no drift to plot")
    L = max(r["length"] for r in table)
    rows = [r for r in table if r["length"] == L and len(by_model[r["model"]]) > 1]
    # A variant whose own noise floor is as large as its distances (harness.summary.floor) is no point on this plane.
    unmeasurable = {(f["model"], f["variant"]): f["detail"] for f in summary.get("flags") or []
                    if f.get("flag") == "unmeasurable"}
    drawn = [r for r in rows if r["drift"] is not None and (r["model"], r["variant"]) not in unmeasurable]
    notes = [f"{r['model']} ({r['variant']}): no drift measured against {r['reference']}" for r in rows if r["drift"] is None]
    notes += [f"{r['model']} ({r['variant']}): unmeasurable, {unmeasurable[(r['model'], r['variant'])]}" for r in rows
              if (r["model"], r["variant"]) in unmeasurable]
    if not any(r["variant"] != r["reference"] for r in drawn):
        why = "; ".join(notes) or (f"at {L} tokens every row is a reference against itself "
                                   "(drift 0 by construction)")
        return not_drawn(key, title, "no variant has a drift measurement against its reference: " + why)
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
