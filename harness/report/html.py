"""report.html: one self-contained file (tables, and figures inlined as base64 PNGs).

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
    fig_heatmap,
    fig_margins,
    fig_rung_distances,
    fig_trajectories,
)
from harness.report.markdown import report_tables, run_lines
from harness.report.records import Figure, Table

REPORT_HTML = "report.html"


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
        return not_drawn(key, title, f"drawing failed: {type(exc).__name__}: {exc}")


def build_figures(summary: dict[str, Any], pairs: pd.DataFrame, gens: pd.DataFrame | None, memo=None) -> dict[str, Figure]:
    from harness.core.memo import Memo, b64, frame_digest, unb64

    memo = memo or Memo(None)
    # noise_floor: an unmeasurable variant is left out of the drift figure (harness.report.figures.fig_drift).
    parts = [json.dumps({k: summary.get(k) for k in ("cells", "drift", "tf_drift", "noise_floor")}, sort_keys=True, default=str),
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
