// report.html's behaviour: sortable, filterable tables and the pair browser.
// Every piece of run text (prompts, outputs, ids) reaches the page through textContent or
// createTextNode, never innerHTML: model outputs are untrusted.
"use strict";
(function () {
  function num(s) {
    const m = /^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)/i.exec(s);
    return m ? parseFloat(m[1]) : NaN;
  }
  function sortBy(table, col, th) {
    const body = table.tBodies[0];
    const asc = !th.classList.contains("sorted-asc");
    table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = a.cells[col] ? a.cells[col].textContent : "", y = b.cells[col] ? b.cells[col].textContent : "";
      const nx = num(x), ny = num(y);
      let c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }
  function enhance(table) {
    table.querySelectorAll("thead th").forEach((th, i) => th.addEventListener("click", () => sortBy(table, i, th)));
    const n = table.tBodies[0].rows.length;
    if (n < 8) return;
    const box = document.createElement("input");
    box.type = "search"; box.className = "filter"; box.placeholder = "filter rows (all words must match)";
    const count = document.createElement("span"); count.className = "count"; count.textContent = n + " rows";
    const wrap = table.closest(".scroll") || table;
    wrap.parentNode.insertBefore(box, wrap); wrap.parentNode.insertBefore(count, wrap);
    box.addEventListener("input", () => {
      const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      Array.from(table.tBodies[0].rows).forEach(r => {
        const t = r.textContent.toLowerCase();
        const ok = words.every(w => t.includes(w)); r.style.display = ok ? "" : "none"; if (ok) shown++;
      });
      count.textContent = shown + " of " + n + " rows";
    });
  }
  document.querySelectorAll("table.data").forEach(enhance);

  // ---- pair browser -------------------------------------------------------------------------
  const src = document.getElementById("pairs-json");
  if (!src) return;
  const D = JSON.parse(src.textContent);
  const T = D.texts, M = D.metrics, P = D.pairs;
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const VIS = {" ": "·", "\n": "⏎", "\t": "→", "\u200b": "⟨ZWSP⟩", "\u00a0": "⟨NBSP⟩", "\u200c": "⟨ZWNJ⟩", "\u200d": "⟨ZWJ⟩", "\ufeff": "⟨BOM⟩"};
  function visible(s) {
    let o = "";
    for (const ch of s) {
      if (VIS[ch]) o += VIS[ch] + (ch === "\n" ? "\n" : "");
      else if (/[\u0300-\u036f\u2000-\u206f\uff00-\uffef]/.test(ch)) o += "⟨U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟩";
      else o += ch;
    }
    return o;
  }
  function span(a, b) {
    const n = Math.min(a.length, b.length); let i = 0;
    while (i < n && a[i] === b[i]) i++;
    let j = 0;
    while (j < n - i && a[a.length - 1 - j] === b[b.length - 1 - j]) j++;
    return [i, a.length - j, b.length - j];
  }
  function snap(a, b, sp) {
    // A word edit is shown as whole words; an edit of whitespace or punctuation stays exact.
    let [s, ea, eb] = sp;
    const wordy = /[\p{L}\p{N}]/u;
    if (!wordy.test(a.slice(s, ea)) && !wordy.test(b.slice(s, eb))) return sp;
    while (s > 0 && wordy.test(a[s - 1])) s--;
    while (ea < a.length && wordy.test(a[ea]) && eb < b.length && wordy.test(b[eb])) { ea++; eb++; }
    return [s, ea, eb];
  }
  function promptPre(text, s, e) {
    const pre = el("pre");
    pre.appendChild(document.createTextNode(text.slice(0, s)));
    const part = text.slice(s, e);
    const m = el("mark", "edit", (part.length <= 40 ? visible(part) : part) || "∅");
    m.title = "the edit (whitespace and invisible characters made visible)";
    pre.appendChild(m);
    pre.appendChild(document.createTextNode(text.slice(e)));
    return pre;
  }
  function outputPre(text, d, other) {
    const pre = el("pre");
    if (text == null) { pre.textContent = "(no generation recorded)"; return pre; }
    if (text === "") { pre.appendChild(el("i", "after", "(empty output: the first token was end-of-sequence)")); return pre; }
    pre.appendChild(document.createTextNode(text.slice(0, d)));
    if (d >= text.length) {
      if (other != null && other.length > text.length) pre.appendChild(el("mark", "div", "⟨ends here⟩"));
      return pre;
    }
    let e = d + 1;
    while (e < text.length && !/\s/.test(text[e]) && !/\s/.test(text[d])) e++;
    const m = el("mark", "div", visible(text.slice(d, e))); m.title = "first divergence";
    pre.appendChild(m);
    pre.appendChild(el("span", "after", text.slice(e)));
    return pre;
  }
  const fmtv = v => v == null ? "–" : (Math.abs(v) >= 1e-3 || v === 0 ? (+v.toFixed(4)).toString() : v.toExponential(2));
  const root = document.getElementById("browser");
  const detail = document.getElementById("pair-detail");
  function show(p) {
    detail.replaceChildren();
    if (!p) { detail.appendChild(el("p", "empty", "No pair matches the filters.")); return; }
    detail.appendChild(el("h3", null, p.id + "  (" + p.rung + " / " + p.edit_kind + ", " + p.length + " tokens)"));
    const mt = el("table"); const hr = el("tr"), vr = el("tr");
    M.forEach(m => { hr.appendChild(el("th", null, m)); vr.appendChild(el("td", "num", fmtv(p[m]))); });
    const th = el("thead"); th.appendChild(hr); const tb = el("tbody"); tb.appendChild(vr);
    mt.appendChild(th); mt.appendChild(tb); detail.appendChild(mt);
    const pa = T[p.pa], pb = T[p.pb];
    detail.appendChild(el("h3", null, "Prompts (the edit highlighted)"));
    const ps = el("div", "sides");
    if (pa != null && pb != null) {
      const [s, ea, eb] = snap(pa, pb, span(pa, pb));
      [["a", pa, ea], ["b", pb, eb]].forEach(([k, t, e]) => { const d = el("div", "side"); d.appendChild(el("div", "lbl", "prompt " + k)); d.appendChild(promptPre(t, s, e)); ps.appendChild(d); });
    } else ps.appendChild(el("p", "empty", "ladder.json has no text for this pair"));
    detail.appendChild(ps);
    detail.appendChild(el("h3", null, "Outputs (first divergence marked; the rest of each output in red)"));
    const oa = T[p.oa], ob = T[p.ob];
    const d = (oa == null || ob == null) ? 0 : span(oa, ob)[0];
    const os = el("div", "sides");
    [["a", oa, ob, p.sa], ["b", ob, oa, p.sb]].forEach(([k, t, o, stop]) => {
      const box = el("div", "side"); box.appendChild(el("div", "lbl", "output " + k + (stop ? " (stopped: " + stop + ")" : "")));
      box.appendChild(outputPre(t, d, o)); os.appendChild(box);
    });
    detail.appendChild(os);
    if (oa != null && ob != null && oa === ob) detail.appendChild(el("p", "note", "The two outputs are identical."));
  }
  const sel = {};
  const CONTROLS = D.controls || [];
  const okRung = v => !sel.rung.value || (sel.rung.value === "__perturbed" ? !CONTROLS.includes(v) : v === sel.rung.value);
  ["model", "variant", "rung"].forEach(k => {
    const s = root.querySelector("select[name=" + k + "]");
    const vals = Array.from(new Set(P.map(p => p[k]))).sort();
    vals.forEach(v => { const o = el("option", null, v); o.value = v; s.appendChild(o); });
    s.addEventListener("change", render); sel[k] = s;
  });
  const q = root.querySelector("input[name=q]"); q.addEventListener("input", render);
  const sortSel = root.querySelector("select[name=sort]");
  M.forEach(m => { const o = el("option", null, m + " (largest first)"); o.value = m; sortSel.appendChild(o); });
  sortSel.addEventListener("change", render);
  const list = root.querySelector(".list tbody"), info = root.querySelector(".info");
  let current = null;
  function render() {
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    let rows = P.filter(p => ["model", "variant"].every(k => !sel[k].value || p[k] === sel[k].value) && okRung(p.rung)
      && words.every(w => (p.id + " " + p.edit_kind).toLowerCase().includes(w)));
    const key = sortSel.value;
    rows = rows.slice().sort((a, b) => (b[key] ?? -Infinity) - (a[key] ?? -Infinity));
    info.textContent = rows.length + " of " + P.length + " pairs" + (D.left_out ? " (" + D.left_out + " pairs that moved least are not embedded)" : "") + (rows.length > 200 ? "; the first 200 listed" : "");
    list.replaceChildren();
    rows.slice(0, 200).forEach(p => {
      const tr = el("tr");
      [p.model, p.variant, p.rung, p.edit_kind, p.pair_id, fmtv(p[key])].forEach((v, i) => tr.appendChild(el("td", i === 5 ? "num" : null, v)));
      tr.addEventListener("click", () => { list.querySelectorAll("tr.sel").forEach(r => r.classList.remove("sel")); tr.classList.add("sel"); current = p; show(p); });
      list.appendChild(tr);
    });
    if (!current || !rows.includes(current)) { current = rows[0] || null; if (list.rows[0]) list.rows[0].classList.add("sel"); }
    else Array.from(list.rows).forEach((r, i) => { if (rows[i] === current) r.classList.add("sel"); });
    show(current);
  }
  const want = decodeURIComponent((location.hash.match(/pair=([^&]+)/) || [])[1] || "");
  if (want) { q.value = want; sel.rung.value = ""; }
  render();
})();
