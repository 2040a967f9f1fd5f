"""report.html: self-contained, every figure a real non-blank PNG, rendered by a real browser.

The run directory is synthetic but built to the real column sets: PairScore
and AuditRow rows from their dataclass fields, generations through the
project's own ``generations_frame`` from real ``Generation`` records, and
the pair metrics (edit distance, first divergence) computed from the
generated ids with the project's metric functions, so trajectories, margins
and tables agree with each other. It has three models (two identical, one
clearly less stable), a second variant for the drift plot and a failed model.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.core import rundir
from harness.audit.records import AuditRow
from harness.decode.greedy import Generation, prompt_key
from harness.score.metrics.edit_distance import first_divergence, normalized_edit_distance, token_edit_distance
from harness.decode.table import generations_frame
from harness.report.html import REPORT_HTML, render_html
from harness.report.write import write_reports
from harness.score.registry import PairScore
from harness.schema import SCHEMA_VERSION, Manifest
from harness.summary.build import build_summary, determinism_verdict

LENGTHS = (8, 32)
VOCAB = 64
N_PROMPTS = 10
# rung -> edit kind; every rung a model is measured on in the demo report
EDITS = {"identical": "identical", "noop_format": "trailing_space", "punctuation": "final_question",
         "synonym": "curated", "paraphrase": "curated", "positive_control": "paired"}
MIN_PLOT_STD = 2.0
"""Pixel standard deviation (0-255 grey) below which an image counts as blank."""

_DEFAULTS = {"str": "", "int": 0, "float": 0.0, "bool": False}


def _row(cls, **values):
    """A record with every field of ``cls``: the given values, type defaults for the rest.

    A field of a type this fixture does not know fails loudly, so a new
    column makes the fixture grow instead of silently missing.
    """
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            out[f.name] = values.pop(f.name)
        elif f.type in _DEFAULTS:
            out[f.name] = _DEFAULTS[f.type]
        else:
            raise TypeError(f"synthetic fixture does not know how to fill {cls.__name__}.{f.name}: {f.type}")
    if values:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(values)}")
    return out


def _generation(model: str, variant: str, key: str, replicate: int, ids: list[int], rng: np.random.Generator,
                tie_at: int | None = None) -> Generation:
    top1 = rng.normal(9.0, 1.0, len(ids)).astype(np.float32)
    margin = rng.exponential(2.5, len(ids)).astype(np.float32) + 0.3
    if tie_at is not None and tie_at < len(ids):
        margin[tie_at] = 0.05  # a near-tie where the two sides part
    logits = rng.normal(0, 2, VOCAB)
    lp = (logits - np.log(np.exp(logits).sum())).astype(np.float32)
    return Generation(
        model=model, variant=variant, prompt_key=key, replicate=replicate, rendered_text=f"<prompt {key}>",
        n_prompt_tokens=12, gen_ids=tuple(int(x) for x in ids), gen_text=" ".join(map(str, ids)), stop_reason="length",
        trace_top1_id=np.asarray(ids, dtype=np.int64), trace_top1_logit=top1,
        trace_top2_id=(np.asarray(ids, dtype=np.int64) + 1) % VOCAB, trace_top2_logit=top1 - margin,
        prompt_end_logprobs=lp, hidden_means={L: rng.normal(0, 1, 16).astype(np.float32) for L in LENGTHS},
    )


def _perturbed_ids(base: list[int], style: str, rng: np.random.Generator) -> tuple[list[int], int]:
    """The other side's output: one inserted token (a shift) or a different continuation."""
    T = len(base)
    if style == "shift":
        k = int(rng.integers(12, 26))
        return (base[:k] + [int(rng.integers(VOCAB))] + base[k:])[:T], k
    if style == "diverge":
        k = int(rng.integers(2, 7))
        return base[:k] + [int(x) for x in rng.integers(0, VOCAB, T - k)], k
    return [int(x) for x in rng.integers(0, VOCAB, T)], 0  # unrelated task


def _model_tables(model: str, variant: str, style: str, seed: int, base_seed: int, drift_from: int | None):
    """Generations and pair rows of one model x variant."""
    rng = np.random.default_rng(seed)
    base_rng = np.random.default_rng(base_seed)
    top1 = 0.99995 if (model, variant) == ("jumpy", "bf16") else 0.6  # a confident-but-unstable model for the flags
    gens, rows = [], []
    T = max(LENGTHS)
    for i in range(N_PROMPTS):
        base = [int(x) for x in base_rng.integers(0, VOCAB, T)]
        if drift_from is not None:  # a quantized variant: its own output parts from the reference early
            base = base[:drift_from] + [int(x) for x in rng.integers(0, VOCAB, T - drift_from)]
        ka = prompt_key([i, 0])
        gens.append(_generation(model, variant, ka, 0, base, rng))
        for rung, kind in EDITS.items():
            pid = f"p{i}/{rung}/{kind}"
            if rung == "identical":
                kb, rep, other, tie = ka, 1, base, None
            else:
                kb, rep = prompt_key([i, 1 + list(EDITS).index(rung)]), 0
                other, k = _perturbed_ids(base, "unrelated" if rung == "positive_control" else style, rng)
                tie = k
            gens.append(_generation(model, variant, kb, rep, other, rng, tie_at=tie))
            for L in LENGTHS:
                a, b = base[:L], other[:L]
                ne = normalized_edit_distance(a, b)
                emb = 0.0 if a == b else float(np.clip(0.7 * ne + rng.normal(0.02, 0.01), 0.001, 1.0))
                rows.append(_row(
                    PairScore, model=model, variant=variant, pair_id=pid, prompt_id=f"p{i}", rung=rung, edit_kind=kind,
                    length=L, emb_dist=emb, emb_dist_answer=emb, tok_edit=token_edit_distance(a, b), tok_edit_norm=ne,
                    tok_edit_norm_answer=ne, first_div=first_divergence(a, b), len_a=len(a), len_b=len(b),
                    top1_prob_a=top1, top1_prob_b=top1, js=0.0 if rung == "identical" else 0.01,
                    prompt_key_a=ka, prompt_key_b=kb,
                ))
    return gens, rows


def _emb_like(a: list[int], b: list[int]) -> float:
    # Stands in for MiniLM: 0 for equal texts, growing with the token edit distance.
    return 0.0 if a == b else float(min(1.0, 0.7 * normalized_edit_distance(a, b) + 0.02))


def _drift_rows(gens: list[Generation], reference: str = "bf16") -> list[dict]:
    """drift.parquet: each variant against the reference on the same prompt; the reference against its re-decode."""
    ids = {(g.model, g.variant, g.prompt_key, g.replicate): list(g.gen_ids) for g in gens}
    rows = []
    for (model, variant, key, rep), mine in sorted(ids.items()):
        if rep != 0:
            continue
        other = ids.get((model, variant, key, 1)) if variant == reference else ids.get((model, reference, key, 0))
        if other is None:
            continue  # a prompt with no re-decode (only identical-rung prompts are decoded twice)
        for L in LENGTHS:
            a, b = other[:L], mine[:L]
            rows.append(_row(PairScore, model=model, variant=variant, pair_id=f"drift/{key}", prompt_id=key, rung="drift",
                             edit_kind=f"{reference}->{variant}", length=L, emb_dist=_emb_like(a, b),
                             emb_dist_answer=_emb_like(a, b), tok_edit=token_edit_distance(a, b),
                             tok_edit_norm=normalized_edit_distance(a, b), first_div=first_divergence(a, b),
                             len_a=len(a), len_b=len(b), prompt_key_a=key, prompt_key_b=key))
    return rows


def synthetic_manifest(models: list[dict], determinism: dict) -> Manifest:
    """A complete run's manifest through the schema (harness.schema.Manifest), with made-up provenance."""
    cells = [{"source": "synthetic", "requested_revision": None, "timings_s": {}, **m} for m in models]
    return Manifest.model_validate({
        "schema_version": SCHEMA_VERSION, "status": "complete", "command": "run",
        "argv": ["stabprobe", "run", "--synthetic"],
        "harness": {"name": "stabprobe", "version": "test", "commit": "synthetic", "dirty": False},
        "config": {
            "models": [{"name": m["name"]} for m in models],
            "ladder": {"name": "synthetic", "source": "tests/test_report_html.py", "sha256": None, "prompts": N_PROMPTS,
                       "pairs": N_PROMPTS * len(EDITS), "rung_counts": {}, "skipped_edits": 0, "skipped": []},
            "lengths": list(LENGTHS), "max_new_tokens": max(LENGTHS),
            "variants": {m["name"]: [m["variant"]] for m in models},
            "cells": [f"{m['name']}--{m['variant']}" for m in models], "shard": None, "executor": "local",
            "batch_size": 8, "batching": "rows", "decoder_version": "synthetic", "engine": None, "capture": "generate",
            "store_full_dist": False, "cache_dir": None,
            "embedder": {"name": "synthetic", "path": "synthetic", "sha256": "synthetic", "max_seq_length": 256,
                         "long_text": "windows", "window": 0, "overlap": 0, "threads": 1}},
        "libraries": {}, "device": {"platform": "synthetic", "processor": "synthetic", "cpu_count": 1, "torch_threads": 1,
                                    "cuda_available": False, "kernels": {}},
        "determinism_flags": {"torch_deterministic_algorithms": False, "cudnn_deterministic": False,
                              "cudnn_benchmark": False, "cublas_workspace_config": None, "do_sample": False,
                              "identical_rung_replicates": "synthetic"},
        "models": cells, "determinism": determinism})


def build_synthetic_run(root: Path, with_variant: bool = True) -> Path:
    """A finished run directory (manifest, audit, generations, pairs, drift) and its reports."""
    run_dir = rundir.new_run_dir(root)
    # (model, variant, style, seed, base seed, drift): the twin repeats the steady model exactly.
    spec = [("steady", "bf16", "shift", 1, 100, None), ("steady-twin", "bf16", "shift", 1, 100, None),
            ("jumpy", "bf16", "diverge", 2, 200, None)]
    if with_variant:
        spec.append(("jumpy", "int4", "shift", 3, 200, 3))
    gens, rows, audit = [], [], []
    for model, variant, style, seed, base_seed, drift in spec:
        g, r = _model_tables(model, variant, style, seed, base_seed, drift)
        gens += g
        rows += r
        for i in range(N_PROMPTS):
            for rung, kind in EDITS.items():
                audit.append(_row(AuditRow, model=model, variant=variant, pair_id=f"p{i}/{rung}/{kind}", prompt_id=f"p{i}",
                                  rung=rung, edit_kind=kind, kept=True, n_tokens_a=12, n_tokens_b=13, first_diff=10))
            # An edit the template erases for every model, and one only the steady models cannot see.
            audit.append(_row(AuditRow, model=model, variant=variant, pair_id=f"p{i}/noop_format/nfkc", prompt_id=f"p{i}",
                              rung="noop_format", edit_kind="nfkc", kept=False, reason="identical_after_template",
                              n_tokens_a=12, n_tokens_b=12, first_diff=-1))
            hidden = model.startswith("steady")
            audit.append(_row(AuditRow, model=model, variant=variant, pair_id=f"p{i}/noop_format/leading_newline",
                              prompt_id=f"p{i}", rung="noop_format", edit_kind="leading_newline", kept=not hidden,
                              reason="identical_after_template" if hidden else "", n_tokens_a=12, n_tokens_b=13,
                              first_diff=-1 if hidden else 3))
    pairs = pd.DataFrame(rows)
    models = ([{"name": m, "variant": v, "status": "ok", "resolved_revision": "sha256:synthetic"} for m, v, *_ in spec]
              + [{"name": "broken", "variant": "bf16", "status": "failed",
                  "error": "OSError: model.safetensors is not a safetensors file"}])
    manifest = synthetic_manifest(models, determinism_verdict(pairs))
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest.to_json_dict())
    rundir.atomic_write_parquet(run_dir / rundir.AUDIT, pd.DataFrame(audit))
    rundir.atomic_write_parquet(run_dir / rundir.GENERATIONS, generations_frame(gens, LENGTHS))
    rundir.atomic_write_parquet(run_dir / rundir.PAIRS, pairs)
    rundir.atomic_write_parquet(run_dir / rundir.DRIFT, pd.DataFrame(_drift_rows(gens)))
    write_reports(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return build_synthetic_run(tmp_path_factory.mktemp("demo"))


def _images(page: str) -> list[np.ndarray]:
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), f"image not inlined as PNG: {src[:60]}"
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        assert img.format == "PNG"
        img.load()  # a truncated or corrupt PNG fails here
        out.append(np.asarray(img.convert("L"), dtype=np.float64))
    return out


def test_every_figure_is_an_inline_non_blank_png(demo_run):
    page = (demo_run / REPORT_HTML).read_text(encoding="utf-8")
    images = _images(page)
    assert len(images) == 5  # rungs, trajectories, margins, drift, variance components (the heatmap is an HTML table: text at any size)
    for img in images:
        assert img.std() > MIN_PLOT_STD, "blank plot"
    assert "Not drawn" not in page and "drawing failed" not in page


def test_page_is_self_contained(demo_run):
    page = (demo_run / REPORT_HTML).read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:|#)", page), "a resource outside the file"
    assert not re.search(r"<script[^>]*\bsrc", page) and "@import" not in page and "url(" not in page
    assert "fetch(" not in page and "XMLHttpRequest" not in page


def test_report_carries_the_required_sections(demo_run):
    page = (demo_run / REPORT_HTML).read_text(encoding="utf-8")
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    for title in ("Failed models and why", "Tokenizer exposure", "Distances per rung", "Clusters (compact letter display)",
                  "Determinism", "Flags"):
        assert title in page and title in md, title
    assert "model.safetensors is not a safetensors file" in page and "model.safetensors is not a safetensors file" in md
    assert "trivial one-token shift" not in md  # figures are HTML-only; their tables are shared
    assert "deterministic" in page
    # The demo's int4 variant barely moves under perturbation but has left its reference: a rendered collapse flag.
    assert '<tr class="alert"><td>collapse</td><td>jumpy</td><td>int4</td>' in page


def test_clusters_separate_the_unstable_model_and_join_the_twins(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    for c in summary["clusters"]:
        if c["variant"] != "bf16" or c["rung"] not in ("synonym", "paraphrase") or c["length"] != 32:
            continue
        letters = {m["model"]: m["letters"] for m in c["models"]}
        assert letters["steady"] == letters["steady-twin"]
        assert not set(letters["jumpy"]) & set(letters["steady"]), c
    ident = [c for c in summary["clusters"] if c["rung"] == "identical" and c["variant"] == "bf16"]
    assert ident and all(len({m["letters"] for m in c["models"]}) == 1 for c in ident)


def test_html_is_rebuilt_byte_for_byte(demo_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(demo_run, copy)
    (copy / REPORT_HTML).unlink()
    write_reports(copy)
    assert (copy / REPORT_HTML).read_bytes() == (demo_run / REPORT_HTML).read_bytes()


def test_missing_tables_are_said_not_hidden(tmp_path):
    summary = build_summary(pd.DataFrame(columns=[f.name for f in dataclasses.fields(PairScore)]),
                            pd.DataFrame(columns=[f.name for f in dataclasses.fields(AuditRow)]), {"models": []})
    page = render_html(summary, {"status": "complete", "models": []},
                       pd.DataFrame(columns=[f.name for f in dataclasses.fields(PairScore)]), None)
    assert "<img" not in page
    assert page.count("Not drawn:") == 5 and "drawing failed" not in page
    assert "No perturbed pair was scored" in page and "No pair was scored, so there is nothing to browse" in page


def test_single_variant_run_says_why_there_is_no_drift_plot(tmp_path):
    run = build_synthetic_run(tmp_path, with_variant=False)
    page = (run / REPORT_HTML).read_text(encoding="utf-8")
    assert "Not drawn: every model ran with one variant" in page
    assert len(_images(page)) == 4  # rungs, trajectories, margins, variance components


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

# Appended to a *copy* of the page only (the report itself carries no script):
# after load, record how many images the browser failed to decode.
_PROBE = """<script>window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).length;
  document.body.setAttribute("data-images", imgs.length);
  document.body.setAttribute("data-broken", broken);
});</script>"""


def _browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, offline: no network services, a fresh profile."""
    return subprocess.run([_chromium(), *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=240)


def _require_chromium() -> None:
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no chromium binary is installed (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium binary on this machine (CI installs it; apt-get install chromium)")


def test_browser_decodes_every_image(demo_run, tmp_path):
    _require_chromium()
    probe = tmp_path / "probe.html"
    probe.write_text((demo_run / REPORT_HTML).read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    res = _browser(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    m = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', res.stdout)
    assert m, f"the probe did not run: {res.stdout[:500]} {res.stderr[-1000:]}"
    assert (int(m.group(1)), int(m.group(2))) == (5, 0)


def test_browser_screenshot_is_not_blank(demo_run, tmp_path):
    _require_chromium()
    png = tmp_path / "report.png"
    res = _browser([f"--screenshot={png}", "--window-size=1280,4000", (demo_run / REPORT_HTML).as_uri()],
                   tmp_path / "profile")
    assert res.returncode == 0 and png.is_file(), f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    shot = Image.open(png)
    assert shot.size == (1280, 4000)
    assert np.asarray(shot.convert("L"), dtype=np.float64).std() > MIN_PLOT_STD, "blank screenshot"
