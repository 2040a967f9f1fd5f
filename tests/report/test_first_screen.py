"""report.html answers first: the headline on the first screen of a real browser, a pair browser that shows
real outputs, untrusted text kept as text; the headline's sentences, the collapsed lengths, `stabprobe show`.

The run directory is test_report_html's synthetic one (real column sets, real generations), plus a
ladder.json whose prompts carry markup that must never become markup.
"""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from harness.report.browse import divergence, edit_span
from harness.report.headline import build_headline
from harness.report.html import REPORT_HTML
from harness.report.lengths import lengths_view
from harness.report.page import browser_html, json_island
from harness.report.show import show_run
from harness.report.write import write_reports
from tests.report.test_report_html import N_PROMPTS, EDITS, _browser, _require_chromium, build_synthetic_run

HOSTILE = '</script><img src=x onerror="document.title=\'pwned\'">'
"""A prompt that would run script if any renderer concatenated it into the page."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = build_synthetic_run(tmp_path_factory.mktemp("first-screen"))
    pairs = [{"pair_id": f"p{i}/{rung}/{kind}", "prompt_id": f"p{i}", "rung": rung, "edit_kind": kind,
              "prompt_a": f"Question {i}: say {HOSTILE} twice.", "prompt_b": f"Question {i}: say {HOSTILE}  twice."}
             for i in range(N_PROMPTS) for rung, kind in EDITS.items()]
    (run_dir / "ladder.json").write_text(json.dumps({"name": "synthetic", "pairs": pairs}), encoding="utf-8")
    write_reports(run_dir)
    return run_dir


def test_headline_names_the_model_that_moves_more(run):
    summary = json.loads((run / "summary.json").read_text())
    h = build_headline(summary)
    assert h.rung == "noop_format" and h.length == 32
    bf16 = [r for r in h.rows if r.variant == "bf16"]
    assert bf16[-1].model == "jumpy" and bf16[0].mean < bf16[-1].mean
    ratio = bf16[-1].mean / bf16[0].mean
    lead = h.sentences[0]
    assert lead.startswith(f"jumpy moves {ratio:.1f}× more than ")
    assert f"({bf16[-1].mean:.3f} vs {bf16[0].mean:.3f}; bf16, 32 tokens)" in lead
    assert h.determinism.startswith("Deterministic")
    # the failed model and every flag are said in words
    assert any(t.startswith("broken (bf16) failed: OSError") for t in h.traps)
    assert len(h.traps) == len(summary["flags"]) + 1


def test_untrusted_text_never_becomes_markup(run):
    page = (run / REPORT_HTML).read_text(encoding="utf-8")
    assert HOSTILE not in page and "<img src=x" not in page
    island = json_island({"t": HOSTILE + "\u2028"})
    assert "<" not in island and ">" not in island and "\u2028" not in island
    assert json.loads(island) == {"t": HOSTILE + "\u2028"}
    rec = {"id": "m/v/p", "model": "<b>m</b>", "variant": "v", "rung": "r", "edit_kind": "k", "pair_id": "p",
           "length": 8, "prompt_a": HOSTILE, "prompt_b": HOSTILE, "out_a": HOSTILE, "out_b": "", "stop_a": "eos",
           "stop_b": "eos", "emb_dist": 0.5}
    assert "</script><img" not in browser_html([rec], ["emb_dist"]).split('id="pairs-json">', 1)[1][:-len("</script>")]


def test_first_screen_shows_the_headline_and_the_browser_a_real_output(run, tmp_path):
    _require_chromium()
    gens = pd.read_parquet(run / "generations.parquet")
    probe = """<script>window.addEventListener("load", () => setTimeout(() => {
      const lead = document.querySelector("#answer .lead");
      const r = lead.getBoundingClientRect();
      const outs = Array.from(document.querySelectorAll("#pair-detail .side pre")).map(p => p.textContent);
      const b = document.body;
      b.setAttribute("data-lead-bottom", Math.round(r.bottom));
      b.setAttribute("data-lead", lead.textContent);
      b.setAttribute("data-outputs", JSON.stringify(outs));
      b.setAttribute("data-title", document.title);
      b.setAttribute("data-images", document.images.length);
    }, 200));</script>"""
    page = tmp_path / "probe.html"
    page.write_text((run / REPORT_HTML).read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    res = _browser(["--window-size=1400,900", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                   tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    import html as _html

    attrs = {k: _html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', res.stdout.split("<body", 1)[1][:200000])}
    assert "lead-bottom" in attrs, f"the probe did not run: {res.stderr[-1000:]}"
    assert 0 < int(attrs["lead-bottom"]) <= 900, "the headline is below the first screen"
    assert attrs["lead"].startswith("jumpy moves")
    outs = json.loads(attrs["outputs"])
    # prompts a and b, then outputs a and b: both outputs are texts the model really generated
    assert len(outs) == 4 and HOSTILE in outs[0] and HOSTILE in outs[1]
    texts = set(gens["gen_text"])
    assert outs[2] in texts or outs[2].startswith("(empty")
    assert outs[3] in texts
    assert attrs["title"] == "stabprobe report" and attrs["images"] == "5"  # the five figures (issue 36 added the variance bars); no injected <img>


def test_edit_span_and_divergence():
    assert edit_span("over time.", "over time. ") == edit_span("over time.", "over time. ")
    s = edit_span("say it twice.", "say it  twice.")
    assert (s.start, s.end_a, s.end_b) == (7, 7, 8)
    s = edit_span("abc", "abc")
    assert (s.start, s.end_a, s.end_b) == (3, 3, 3)
    assert divergence("The answer is 4.", "The answer is 5.") == 14
    assert divergence("same", "same") == 4 and divergence("", "x") == 0


def test_a_length_every_output_ended_before_is_collapsed_once():
    gens = pd.DataFrame({"gen_ids": [[1] * 43, [2] * 5, []]})
    v = lengths_view([512, 64, 8], gens)
    assert v.informative == [8, 64] and v.collapsed == {512: 64} and v.longest_output == 43
    assert v.sentence().startswith("Every output ended within 43 tokens, before 64: the 512-token rows")
    assert lengths_view([8, 64], pd.DataFrame({"gen_ids": [[1] * 64]})).collapsed == {}
    assert lengths_view([8, 64], pd.DataFrame({"gen_ids": [[1] * 9]})).collapsed == {}
    assert lengths_view([8, 64], pd.DataFrame({"gen_ids": [[1] * 8]})).collapsed == {64: 8}


def test_show_prints_the_headline_worst_pairs_and_a_pair_by_id(run, tmp_path):
    out = show_run(run, worst=2, width=160)
    assert out.startswith("jumpy moves") and "Deterministic" in out and "pairs that moved most" in out
    pairs = pd.read_parquet(run / "pairs.parquet")
    gens = pd.read_parquet(run / "generations.parquet")
    row = pairs[(pairs["model"] == "jumpy") & (pairs["rung"] == "punctuation") & (pairs["length"] == 32)].iloc[0]
    one = show_run(run, pair=f"jumpy/bf16/{row['pair_id']}", width=400)
    text_a = gens[(gens["model"] == "jumpy") & (gens["variant"] == "bf16") & (gens["prompt_key"] == row["prompt_key_a"])
                  & (gens["replicate"] == 0)]["gen_text"].iloc[0]
    assert f"jumpy/bf16/{row['pair_id']}" in one and text_a.split()[0] in one
    from harness.errors import InputError

    with pytest.raises(InputError, match="no pair 'nope'"):
        show_run(run, pair="nope")
    empty = tmp_path / "empty"
    shutil.copytree(run, empty)
    (empty / "summary.json").unlink()
    with pytest.raises(InputError, match="summary.json"):
        show_run(empty)
