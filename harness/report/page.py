"""report.html's own parts: the headline screen, the table of contents, the pair browser and the heatmap table.

Every string from the run (model names, prompts, outputs, pair ids, flag texts) goes through
``html.escape`` here, or into the page's JSON island with ``<``, ``>``, ``&`` and the JavaScript
line separators escaped, so no prompt or output can close a tag or a script. The browser script
then writes them with ``textContent`` only (``assets/report.js``).
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

import pandas as pd

from harness.ladder.records import CONTROL_RUNGS
from harness.report.browse import PAGE_PAIRS, TEXT_LIMIT
from harness.report.headline import RUNG_WORDS
from harness.report.records import Headline
from harness.report.text import fmt, mde_text

_esc = html.escape


def asset(name: str) -> str:
    """A file of ``harness/report/assets`` (the page's CSS and script, inlined: the page fetches nothing)."""
    return resources.files("harness.report").joinpath("assets", name).read_text(encoding="utf-8")


def json_island(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: nothing in it can end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def headline_html(h: Headline, collapsed: str) -> str:
    """The first screen: findings in sentences, one figure per model × variant, determinism, traps."""
    parts = ['<section id="answer">']
    parts += [f'<p class="lead">{_esc(s)}</p>' for s in h.sentences]
    ok = h.determinism.startswith("Deterministic")
    parts.append(f'<p class="det {"ok" if ok else "bad"}">{_esc(h.determinism)}</p>')
    if h.rows:
        top = max((r.mean for r in h.rows if not math.isnan(r.mean)), default=0.0) or 1.0
        word = RUNG_WORDS.get(h.rung or "", h.rung or "")
        head = ["model", "variant", f"moves under {word} (mean embedding distance, {h.length} tokens) [95% CI]",
                "cluster", "MDE (80% power)", "base prompts"] + [f"{r} (cluster)" for r in h.other_rungs]
        parts.append('<div class="scroll"><table class="headline data"><thead><tr>'
                     + "".join(f"<th>{_esc(x)}</th>" for x in head) + "</tr></thead><tbody>")
        for r in h.rows:
            width = 0 if math.isnan(r.mean) else int(round(90 * r.mean / top))
            ci = f"[{fmt(r.ci95[0])}, {fmt(r.ci95[1])}]"
            cells = [f"<td>{_esc(r.model)}</td>", f"<td>{_esc(r.variant)}</td>",
                     f'<td class="fig">{_esc(fmt(r.mean))} <span class="note">{_esc(ci)}</span>'
                     f'<span class="bar" style="width:{width}px"></span></td>',
                     f"<td>{_esc(r.cluster)}</td>", f'<td class="num">{_esc(mde_text(r.mde))}</td>',
                     f'<td class="num">{r.n_prompts}</td>']
            cells += [f'<td class="num">{_esc(r.others.get(k, "-"))}</td>' for k in h.other_rungs]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
        parts.append('<p class="note">0 = the two outputs of a pair are the same text; larger = they moved apart. '
                     "Models of one variant sharing a cluster letter are not separated by the paired test (letters "
                     "are clusters, not ranks). MDE: the smallest shift of the mean the run's base prompts detect.</p>")
    if h.traps:
        parts.append(f"<p><b>Traps that fired ({len(h.traps)}):</b></p><ul class=\"traps\">"
                     + "".join(f"<li>{_esc(t)}</li>" for t in h.traps) + "</ul>")
    else:
        parts.append("<p><b>No trap fired</b>: no flag was raised and every model ran.</p>")
    if collapsed:
        parts.append(f'<p class="collapsed">{_esc(collapsed)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def toc_html(entries: list[tuple[str, str]]) -> str:
    """Links to every section, in page order."""
    links = "".join(f'<a href="#{_esc(k)}">{_esc(t)}</a>' for k, t in entries)
    return f'<nav id="toc"><b>Contents</b>{links}</nav>'


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f" … [{len(text) - TEXT_LIMIT} more characters in generations.parquet]"


def browser_html(records: list[dict[str, Any]], metrics: list[str]) -> str:
    """The pair browser: filters, the pair list (most moved first) and one pair in full; data as one JSON island."""
    head = '<h2 id="pairs">Pair browser: what the models actually said</h2>'
    if not records:
        return head + '\n<p class="empty">No pair was scored, so there is nothing to browse.</p>'
    kept = records[:PAGE_PAIRS]
    texts: list[str] = []
    index: dict[str, int] = {}

    def ref(t: str | None) -> int | None:
        if t is None:
            return None
        if t not in index:
            index[t] = len(texts)
            texts.append(t)
        return index[t]

    rows = []
    for r in kept:
        rows.append({"id": r["id"], "model": r["model"], "variant": r["variant"], "rung": r["rung"],
                     "edit_kind": r["edit_kind"], "pair_id": r["pair_id"], "length": r["length"],
                     "pa": ref(r["prompt_a"]), "pb": ref(r["prompt_b"]), "oa": ref(_cut(r["out_a"])),
                     "ob": ref(_cut(r["out_b"])), "sa": r["stop_a"], "sb": r["stop_b"],
                     **{m: r.get(m) for m in metrics}})
    data = {"texts": texts, "metrics": metrics, "pairs": rows, "left_out": len(records) - len(kept),
            "controls": list(CONTROL_RUNGS)}
    twin = ("\nA large distance with a small <code>twin_kl_ab</code> (side A's output read after both prompts) and a small "
            "<code>div_margin_a</code> is one low-margin flip amplified by free running; a large <code>twin_kl_ab</code> "
            "is a shift of belief.") if "twin_kl_ab" in metrics else ""
    return f"""{head}
<section id="browser">
<p class="note">Every scored pair at {kept[0]['length']} tokens, most moved first (embedding distance); the identical rung and
the positive control are left out until you pick "all rungs". Pick a pair in the list, or filter by model, variant, rung or any part of its id (a link to <code>#pair=ID</code> opens that pair).{twin}</p>
<div class="controls">
<select name="model"><option value="">all models</option></select>
<select name="variant"><option value="">all variants</option></select>
<select name="rung"><option value="__perturbed" selected>perturbed rungs (controls left out)</option><option value="">all rungs</option></select>
<input name="q" type="search" placeholder="pair id or edit kind" size="32">
<label>order <select name="sort"></select></label>
<span class="info"></span>
</div>
<div class="list"><table><thead><tr><th>model</th><th>variant</th><th>rung</th><th>edit kind</th><th>pair</th><th>value</th></tr></thead><tbody></tbody></table></div>
<div id="pair-detail"></div>
</section>
<script type="application/json" id="pairs-json">{json_island(data)}</script>"""


def heatmap_html(pairs: pd.DataFrame, length: int | None) -> str:
    """Mean embedding distance per rung / edit kind (rows) × model / variant (columns), as a coloured table:
    text at any panel size, as many rows as edit kinds, one column per model."""
    head = '<h2 id="fig_heatmap">Mean embedding distance, edit kind × model</h2>'
    if pairs.empty:
        return head + '\n<p class="empty">No pair was scored.</p>'
    L = int(length if length is not None else pairs["length"].max())
    p = pairs[pairs["length"] == L]
    g = p.groupby(["rung", "edit_kind", "model", "variant"])["emb_dist"].agg(["mean", "count"]).reset_index()
    from harness.ladder.records import RUNGS

    order = {r: i for i, r in enumerate(RUNGS)}
    kinds = sorted({(r, e) for r, e in zip(g["rung"], g["edit_kind"])}, key=lambda x: (order.get(x[0], 99), x[1]))
    cols = sorted({(m, str(v)) for m, v in zip(g["model"], g["variant"])})
    cell = {(r.rung, r.edit_kind, r.model, str(r.variant)): (r.mean, r.count) for r in g.itertuples()}
    top = max(float(g["mean"].max()), 1e-9) if len(g) else 1.0
    out = [head, f'<p class="note">At {L} tokens. Darker: the outputs moved further apart; blank: no scored pair '
                 "(the edit was dropped by the token audit or is not in the ladder). Hover a value for its pair count.</p>",
           '<div class="scroll"><table class="heat data"><thead><tr><th>rung</th><th>edit kind</th>'
           + "".join(f"<th>{_esc(m)}<br>{_esc(v)}</th>" for m, v in cols) + "</tr></thead><tbody>"]
    for rung, kind in kinds:
        tds = []
        for m, v in cols:
            x = cell.get((rung, kind, m, v))
            if x is None or math.isnan(x[0]):
                tds.append('<td class="v"></td>')
                continue
            a = min(1.0, x[0] / top)
            style = f"background:rgba(31,95,168,{0.08 + 0.8 * a:.2f});color:{'#fff' if a > 0.55 else '#111'}"
            tds.append(f'<td class="v" style="{style}" title="{int(x[1])} pairs">{x[0]:.3f}</td>')
        out.append(f"<tr><td>{_esc(rung)}</td><td>{_esc(kind)}</td>{''.join(tds)}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)
