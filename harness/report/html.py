"""report.html: one self-contained file: the answer first, a pair browser, tables, figures inlined as base64 PNGs.

Nothing in the page is fetched: no scripts, fonts, stylesheets or images from
anywhere else, so the file can be mailed, archived as a CI artifact or opened
offline. The tables are those of the Markdown report (``report_tables``); the
figures are drawn by harness.report.figures (matplotlib's Agg canvas, no
display). A figure that cannot be drawn is replaced by a sentence saying why,
never silently dropped.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any, Callable

import pandas as pd

from harness.report.figures import (
    not_drawn,
    fig_drift,
    fig_margins,
    fig_rung_distances,
    fig_trajectories,
)
from harness.report.markdown import report_tables, run_lines
from harness.report.variance_tables import fig_variance
from harness.report.browse import PAGE_METRICS, browse_pairs
from harness.report.headline import build_headline
from harness.report.lengths import drop_collapsed, lengths_view
from harness.report.page import asset, browser_html, headline_html, heatmap_html, toc_html
from harness.report.records import Figure, Table

REPORT_HTML = "report.html"


# Figures are placed after the table with this key.
_FIGURES_AFTER = {"distances": ("fig_rungs",), "separated": ("fig_traj", "fig_margins"), "drift": ("fig_drift",),
                  "variance": ("fig_variance",)}


def _inline_md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _table_html(t: Table) -> str:
    parts = [f'<h2 id="{html.escape(t.key, quote=True)}">{html.escape(t.title)}</h2>']
    if t.note:
        parts.append(f'<p class="note">{html.escape(t.note)}</p>')
    if not t.rows:
        parts.append(f'<p class="empty">{html.escape(t.empty)}</p>')
        return "\n".join(parts)
    parts.append('<div class="scroll"><table class="data"><thead><tr>'
                 + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
    for i, r in enumerate(t.rows):
        cls = ' class="alert"' if i in t.bold_rows else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    parts.append("</tbody></table></div>")
    return "\n".join(parts)


def _figure_html(f: Figure) -> str:
    head = f'<h2 id="{html.escape(f.key, quote=True)}">{html.escape(f.title)}</h2>'
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
        return not_drawn(key, title, f"drawing failed: {type(exc).__name__}: {exc}")


def build_figures(summary: dict[str, Any], pairs: pd.DataFrame, gens: pd.DataFrame | None, memo=None) -> dict[str, Figure]:
    from harness.core.memo import Memo, b64, frame_digest, unb64

    memo = memo or Memo(None)
    # noise_floor: an unmeasurable variant is left out of the drift figure (harness.report.figures.fig_drift).
    parts = [json.dumps({k: summary.get(k) for k in ("cells", "drift", "tf_drift", "noise_floor", "variance")}, sort_keys=True, default=str),
             frame_digest(pairs), frame_digest(gens), "fig_variance-2"]  # the variance figure's drawing (issue 36)
    return memo.get(
        "figures", parts, lambda: _draw_figures(summary, pairs, gens),
        encode=lambda figs: [{**f.__dict__, "png": b64(f.png)} for f in figs.values()],
        decode=lambda rows: {r["key"]: Figure(**{**r, "png": unb64(r["png"])}) for r in rows},
    )


def _draw_figures(summary: dict[str, Any], pairs: pd.DataFrame, gens: pd.DataFrame | None) -> dict[str, Figure]:
    figs = [
        _safe("fig_rungs", "Embedding distance per rung", lambda: fig_rung_distances(summary)),
        _safe("fig_traj", "Levenshtein trajectories", lambda: fig_trajectories(pairs, gens)),
        _safe("fig_margins", "Per-step margins", lambda: fig_margins(pairs, gens)),
        _safe("fig_drift", "Drift", lambda: fig_drift(summary)),
        _safe("fig_variance", "Variance components", lambda: fig_variance(summary)),
    ]
    return {f.key: f for f in figs}


def _without_lengths(summary: dict[str, Any], gone: set[int]) -> dict[str, Any]:
    """The summary with every row at a collapsed length left out (sections that are lists of rows with a length)."""
    if not gone:
        return summary
    return {k: ([r for r in v if not (isinstance(r, dict) and r.get("length") in gone)] if isinstance(v, list) else v)
            for k, v in summary.items()}


def render_html(summary: dict[str, Any], manifest: dict[str, Any], pairs: pd.DataFrame,
                gens: pd.DataFrame | None, memo=None, prompts: dict[str, tuple[str, str]] | None = None) -> str:
    """The page: the answer first (headline), contents, the pair browser, then every table and figure.

    ``prompts``: pair_id -> (prompt_a, prompt_b) from ladder.json, for the pair browser.
    """
    view = lengths_view(manifest.get("config", {}).get("lengths") or sorted(set(pairs["length"])) if not pairs.empty
                        else [], gens)
    gone = set(view.collapsed)
    shown = _without_lengths(summary, gone)
    shown_pairs = pairs[~pairs["length"].isin(gone)] if gone and not pairs.empty else pairs
    head = build_headline(summary, view.informative)
    figures = build_figures(shown, shown_pairs, gens, memo)
    records = browse_pairs(shown_pairs, gens, prompts or {}, head.length)
    # a column no pair has a value in (the twin divergence of a run without --twin) is left out
    metrics = [m for m in PAGE_METRICS if m in pairs.columns and not (m.startswith("twin_") and pairs[m].isna().all())]
    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    sections.append(("pairs", "Pair browser", browser_html(records, metrics)))
    placed: set[str] = set()
    for t in report_tables(summary, manifest):
        t = drop_collapsed(t, view)
        sections.append((t.key, t.title, _table_html(t)))
        if t.key == "separated":
            sections.append(("fig_heatmap", "Heatmap: edit kind × model", heatmap_html(shown_pairs, head.length)))
        for k in _FIGURES_AFTER.get(t.key, ()):
            sections.append((k, figures[k].title, _figure_html(figures[k])))
            placed.add(k)
    # A figure whose anchor table is absent (e.g. a summary without a drift table) still appears.
    sections += [(k, f.title, _figure_html(f)) for k, f in figures.items() if k not in placed]
    skipped = manifest.get("config", {}).get("ladder", {}).get("skipped_edits", 0)
    run = ("<h2 id=\"run\">The run</h2><ul>" + "".join(f"<li>{_inline_md(x)}</li>" for x in run_lines(summary, manifest, text=str, code=lambda c: f"`{c}`"))
           + f"<li>Edits not applicable to their prompt (listed in the manifest): {html.escape(str(skipped))}</li></ul>")
    sections.append(("run", "The run", run))
    ladder = manifest.get("config", {}).get("ladder", {}).get("name")
    meta = (f"status {manifest.get('status')} · ladder {ladder} · lengths "
            f"{', '.join(map(str, view.informative))} · {len(head.rows)} model × variants · "
            f"stabprobe {manifest.get('harness', {}).get('version')}")
    body = [f'<header class="top"><h1>stabprobe report</h1><span class="meta">{html.escape(meta)}</span></header>',
            headline_html(head, view.sentence()), toc_html([(k, t) for k, t, _ in sections])]
    body += [s for _, _, s in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>stabprobe report</title>"
            f"<style>{asset('report.css')}</style></head><body><main>\n" + "\n".join(body)
            + f"\n</main><script>{asset('report.js')}</script>\n</body></html>\n")
