"""`stabprobe floor`: the dynamical floor of quantization against each model's stretching.

Per model: the stretching of the reference weights (σ of the end-to-end
residual-stream Jacobian at the prompt end, fp32, :mod:`harness.stretch_study.measure`);
then for every variant ``q`` (bf16 reference, bitsandbytes int8/int4,
optimum-quanto int2, llama.cpp's GGUF ladder f16 ... q2_k read by llama.cpp:
harness.stretch_study.floor_gguf), greedy outputs of every distinct prompt and

- ``P(q)``: normalized token edit distance between the two sides of every
  perturbed pair (identical and positive-control rungs left out), decoded by ``q``;
- ``D(q)``: normalized token edit distance between ``q``'s and the
  reference's output of the same prompt (symmetric);
- answer flips: the share of prompts with a known answer whose correctness
  differs from the reference's (either direction), and the accuracy itself;
- teacher-forced drift both ways (asymmetric): ``KL(p_ref ‖ p_q)`` on the
  reference's tokens and ``KL(p_q ‖ p_ref)`` on ``q``'s own tokens, mean over
  generated positions, with the same-top-1 share of each.

- the identical rung decoded a second time (fresh): the variant's
  run-to-run floor, 0 when its decode is deterministic.

Means are over base prompts (each prompt's mean, prompts resampled for the
95% CI); the paired contrasts against bf16 and the engine floor (ΔP, ΔKL,
Δaccuracy with CIs and MDEs: harness.stretch_study.floor_contrast) say at
which bit width each view first moves. Per model, drift growth = least-squares slope of D against halvings
of the bit width (``log2(16/bits)``, the reference at 16 bits with D = 0);
across models, Spearman of stretching against drift growth with a bootstrap
CI over models. With a handful of toy models (and their random-init twins as
controls) that correlation cannot answer whether models that stretch less
drift less; the study is the instrument for a real panel on a GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness.core import rundir
from harness.errors import InputError, error_line
from harness.ladder.records import Ladder
from harness.models.loading import load_model
from harness.models.registry import ModelEntry
from harness.run.study import ModelOutcome, StudyRun, study_run
from harness.score.answers import correctness
from harness.score.metrics.edit_distance import first_divergence, normalized_edit_distance
from harness.stretch.growth import drift_growth, prompt_mean_ci, rank_correlation
from harness.stretch_study import measure
from harness.stretch_study.common import EXCLUDED_FROM_P, fits, render_pairs, select_pairs
from harness.stretch_study.records import StudyResult
from harness.stretch_study.floor_contrast import contrasts, floor_verdict
from harness.stretch_study.floor_gguf import GgufFloorVariant
from harness.stretch_study.floor_variants import FLOOR_VARIANTS, REFERENCE, load_floor_variant, parse_floor_variants

SCHEMA = "stabprobe-floor/1"
CONTROL_SUFFIX = "-randinit"


@dataclass(frozen=True)
class FloorConfig:
    """What `stabprobe floor` measures."""

    models: tuple[ModelEntry, ...]
    """Models to study."""
    ladder: Ladder
    """Pairs for P; their distinct prompts for D."""
    out: Path = Path("runs")
    """Directory that receives the run directory."""
    variants: tuple[str, ...] = ("bf16", "int8", "int4", "quanto-int2")
    """Weight variants (see harness.stretch_study.floor_variants); bf16 is the reference and always runs."""
    max_prompts: int | None = None
    """Base prompts (ladder order) whose pairs are used; None = all."""
    max_new_tokens: int = 32
    """Greedy tokens per prompt."""
    stretch_prompts: int = 4
    """Base prompts whose prompt-end stretching is measured per model."""
    tol: float = 1e-5
    """Power-iteration tolerance."""
    max_iter: int = 200
    """Power-iteration cap."""
    random_init_controls: bool = False
    """Add a random-initialised twin of every local model (same config and tokenizer, seeded) as a control."""
    control_seed: int = 0
    """Base seed of the random-init twins (each twin adds the CRC-32 of its model's name)."""
    argv: tuple[str, ...] = ()
    """Command line, for the manifest."""
    threads: int | None = None
    """torch CPU threads of the study (None: the project's policy, one on CPU; harness.core.threads)."""
    loader: Callable[..., Any] = load_model
    """Loads (entry, variant[, lazy]) -> LoadedModel."""


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def random_init_twin(entry: ModelEntry, dest: Path, seed: int) -> ModelEntry:
    """Save a random-initialised copy of a local model (config and tokenizer files kept) and describe it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not entry.is_local:
        raise InputError("--random-init-controls", entry.name, "random-init controls need a local model directory")
    src = Path(entry.source)
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt") and f.name != "README.md":
            shutil.copy2(f, dest / f.name)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
    model.save_pretrained(dest)
    return entry.model_copy(update={"name": entry.name + CONTROL_SUFFIX, "source": str(dest), "revision": None,
                                    "notes": f"random-init twin of {entry.name} (seed {seed}): a control"})


def _decode_all(loaded, keys: list[tuple[int, ...]], n: int) -> dict[tuple[int, ...], list[int]]:
    if isinstance(loaded, GgufFloorVariant):  # llama.cpp decodes its own file
        return {k: loaded.greedy(k, n, loaded.info.eos_token_ids) for k in keys}
    return {k: measure.greedy(loaded.model, k, n, loaded.info.eos_token_ids) for k in keys}


def _forced(loaded, prompt, tokens) -> np.ndarray:
    """Log-probabilities [n + 1, V] of ``tokens`` after ``prompt``: HF's, or llama.cpp's for a GGUF variant."""
    if isinstance(loaded, GgufFloorVariant):
        return loaded.teacher_forced(prompt, tokens)
    return measure.teacher_forced(loaded.model, prompt, tokens)[0]


def _text(ref, ids) -> str:
    # One tokenizer for every variant of a model (a GGUF variant is fed and read in the HF tokenizer's ids).
    return ref.tokenizer.decode(list(ids), skip_special_tokens=True)


def _same_top1(logp_a: np.ndarray, logp_b: np.ndarray) -> float:
    return float(np.mean(logp_a.argmax(axis=1) == logp_b.argmax(axis=1)))


def measure_variant(ref, var, keys, out_ref, out_var, prompt_of, forced_ref) -> list[dict[str, Any]]:
    """Per distinct prompt: D (tokens) and the teacher-forced KL both ways of one variant against the reference."""
    rows = []
    for k in keys:
        y_r, y_q = out_ref[k], out_var[k]
        row = {"prompt_id": prompt_of[k], "n_prompt_tokens": len(k), "d_tokens": normalized_edit_distance(y_r, y_q),
               "first_divergence": first_divergence(y_r, y_q)}
        for side, y, own, other in (("ref_tokens", y_r, ref, var), ("var_tokens", y_q, var, ref)):
            if not y:
                row[f"kl_{side}"] = row[f"same_top1_{side}"] = float("nan")
                continue
            if side == "ref_tokens":
                if k not in forced_ref:
                    forced_ref[k] = _forced(ref, k, y)
                lp_own = forced_ref[k][: len(y)]
            else:
                lp_own = _forced(own, k, y)[: len(y)]
            lp_other = _forced(other, k, y)[: len(y)]
            row[f"kl_{side}"] = float(np.mean(measure.kl_rows(lp_own, lp_other)))
            row[f"same_top1_{side}"] = _same_top1(lp_own, lp_other)
        rows.append(row)
    return rows


def run_model(entry: ModelEntry, cfg: FloorConfig, record: dict[str, Any]) -> tuple[list[dict], list[dict], list[dict], dict]:
    t0 = time.perf_counter()
    fp32 = cfg.loader(entry, "fp32")
    pairs = render_pairs(select_pairs(cfg.ladder, cfg.max_prompts), fp32)
    ctx = fp32.info.context_length
    pairs = [p for p in pairs if fits(p.ids_a, cfg.max_new_tokens, ctx) and fits(p.ids_b, cfg.max_new_tokens, ctx)]
    prompt_of: dict[tuple[int, ...], str] = {}
    for p in pairs:
        prompt_of.setdefault(p.ids_a, p.pair.prompt_id)
        prompt_of.setdefault(p.ids_b, p.pair.prompt_id)
    keys = list(prompt_of)
    ident = list(dict.fromkeys(p.ids_a for p in pairs if p.pair.rung == "identical"))
    # Expected answer of every distinct prompt (None: unknown): the answer flips against the reference.
    expected_of: dict[tuple[int, ...], Any] = {}
    for p in pairs:
        expected_of.setdefault(p.ids_a, p.pair.expected("a"))
        if expected_of.get(p.ids_b) is None:
            expected_of[p.ids_b] = p.pair.expected("b")
    base = list(dict.fromkeys((p.pair.prompt_id, p.ids_a) for p in pairs))[: cfg.stretch_prompts]
    stretch_rows = []
    for pid, ids in base:
        for r in measure.stretching(fp32.model, ids, cfg.tol, cfg.max_iter):
            stretch_rows.append({"model": entry.name, "prompt_id": pid, **r})
    del fp32
    gc.collect()
    timings = record.setdefault("timings_s", {})
    timings["stretching"] = round(time.perf_counter() - t0, 2)
    ref = load_floor_variant(entry, REFERENCE, cfg.loader)
    record["variants"] = {REFERENCE: dataclasses.asdict(ref.info)}
    out_ref = _decode_all(ref, keys, cfg.max_new_tokens)
    forced_ref: dict = {}
    prompt_rows, pair_rows = [], []
    for v in cfg.variants:
        bits, scheme = FLOOR_VARIANTS[v]
        try:
            t1 = time.perf_counter()
            var = ref if v == REFERENCE else load_floor_variant(entry, v, cfg.loader)
            record["variants"][v] = dataclasses.asdict(var.info)
            if isinstance(var, GgufFloorVariant):
                record["variants"][v]["gguf"] = var.gguf
            t2 = time.perf_counter()
            out_v = out_ref if v == REFERENCE else _decode_all(var, keys, cfg.max_new_tokens)
            # The identical rung decoded a second time, fresh: the variant's run-to-run floor (0 when deterministic).
            again = _decode_all(var, ident, cfg.max_new_tokens)
            t3 = time.perf_counter()
            for i, (k, r) in enumerate(zip(keys, measure_variant(ref, var, keys, out_ref, out_v, prompt_of, forced_ref))):
                c_ref = correctness(_text(ref, out_ref[k]), expected_of.get(k))
                c_q = correctness(_text(ref, out_v[k]), expected_of.get(k))
                prompt_rows.append({"model": entry.name, "variant": v, "bits": bits, "scheme": scheme, "key": i, **r,
                                    "correct": c_q, "answer_flip": abs(c_q - c_ref),  # NaN where no answer is known
                                    "identical_repeat": normalized_edit_distance(out_v[k], again[k]) if k in again
                                    else float("nan")})
            for p in pairs:
                if p.pair.rung in EXCLUDED_FROM_P or p.erased:
                    continue
                pair_rows.append({"model": entry.name, "variant": v, "bits": bits, "pair_id": p.pair.pair_id,
                                  "prompt_id": p.pair.prompt_id, "rung": p.pair.rung,
                                  "p_tokens": normalized_edit_distance(out_v[p.ids_a], out_v[p.ids_b])})
            timings[v] = {"load": round(t2 - t1, 2), "decode": round(t3 - t2, 2), "measure": round(time.perf_counter() - t3, 2)}
            if isinstance(var, GgufFloorVariant):
                var.close()
            if var is not ref:
                del var
                gc.collect()
        except Exception as exc:  # noqa: BLE001 - one variant failing (e.g. a library missing) is recorded
            record["variants"][v] = {"status": "failed", "error": error_line(exc, limit=300)}
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return stretch_rows, prompt_rows, pair_rows, record["variants"]


def floor_table(stretch: pd.DataFrame, prompts: pd.DataFrame, pairs: pd.DataFrame, variants_info: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(model × variant rows, model rows) with CIs, drift growth and the collapse verdict."""
    rows = []
    for (model, v), g in prompts.groupby(["model", "variant"], sort=False):
        pg = pairs[(pairs["model"] == model) & (pairs["variant"] == v)]
        row = {"model": model, "variant": v, "bits": int(g["bits"].iloc[0]), "scheme": g["scheme"].iloc[0]}
        # A GGUF's file bits per parameter (block scales, fallback types): what the nominal width hides.
        gguf = (variants_info.get(model, {}).get(v) or {}).get("gguf") or {}
        row["bits_effective"] = float(gguf.get("bits_per_parameter", row["bits"]))
        for col, frame in (("p_tokens", pg), ("d_tokens", g), ("kl_ref_tokens", g), ("kl_var_tokens", g),
                           ("same_top1_ref_tokens", g), ("same_top1_var_tokens", g),
                           ("correct", g), ("answer_flip", g), ("identical_repeat", g)):
            c = prompt_mean_ci(frame[col], frame["prompt_id"]) if len(frame) else prompt_mean_ci([], [])
            row[col] = c["mean"]
            row[f"{col}_ci_low"], row[f"{col}_ci_high"] = c["ci"]
            row[f"{col}_n_missing"] = c["n_missing"]
        row["n_prompts"] = int(g["prompt_id"].nunique())
        row["n_distinct_prompts"] = int(len(g))
        row["n_pairs"] = int(len(pg))
        rows.append(row)
    table = pd.DataFrame(rows)
    models = []
    for model, g in table.groupby("model", sort=False):
        ref = g[g["variant"] == REFERENCE]
        p_ref = float(ref["p_tokens"].iloc[0]) if len(ref) else float("nan")
        table.loc[g.index, "collapse"] = (g["variant"] != REFERENCE) & (g["p_tokens"] < p_ref) & (g["d_tokens"] > g["p_tokens"])
        s = stretch[stretch["model"] == model] if len(stretch) else stretch
        prod = s[s["map"] == "product"] if len(s) else s
        blocks = s[s["map"].str.startswith("block_")] if len(s) else s
        failed = [v for v, info in variants_info.get(model, {}).items() if info.get("status") == "failed"]
        models.append({
            "model": model, "control": model.endswith(CONTROL_SUFFIX),
            "stretch_product_sigma": float(prod["sigma"].median()) if len(prod) else float("nan"),
            "stretch_product_sigma_rel": float(prod["sigma_rel"].median()) if len(prod) else float("nan"),
            "stretch_block_sigma_rel_max": float(blocks.groupby("prompt_id")["sigma_rel"].max().median()) if len(blocks) else float("nan"),
            "drift_growth_tokens": drift_growth(g["bits"], g["d_tokens"]),
            "drift_growth_kl": drift_growth(g["bits"], g["kl_ref_tokens"]),
            "p_reference": p_ref, "variants_failed": ",".join(failed),
        })
    return table, pd.DataFrame(models)


def run_floor(cfg: FloorConfig) -> StudyResult:
    variants = parse_floor_variants(cfg.variants)
    cfg = dataclasses.replace(cfg, variants=variants)
    if not cfg.models:
        raise InputError("--models", "", "no models")
    if cfg.max_new_tokens < 1:
        raise InputError("--max-new-tokens", str(cfg.max_new_tokens), "expected a positive integer")
    select_pairs(cfg.ladder, cfg.max_prompts)
    if cfg.random_init_controls:
        for m in cfg.models:
            if not m.is_local:
                raise InputError("--random-init-controls", m.name, "random-init controls need local model directories")
    models: list[ModelEntry] = []

    def config(run_dir: Path) -> dict[str, Any]:
        models.extend(cfg.models)
        if cfg.random_init_controls:
            # One seed per twin: two models of one architecture given one seed are the same network, not two controls.
            models.extend(random_init_twin(m, run_dir / "controls" / (m.name + CONTROL_SUFFIX),
                                           cfg.control_seed + zlib.crc32(m.name.encode())) for m in cfg.models)
        return {"models": [m.model_dump() for m in models], "ladder": {"name": cfg.ladder.name, "sha256": cfg.ladder.source_sha256},
                "variants": list(variants), "bits": {v: FLOOR_VARIANTS[v][0] for v in variants},
                **{k: getattr(cfg, k) for k in ("max_prompts", "max_new_tokens", "stretch_prompts", "tol", "max_iter",
                                                  "random_init_controls", "control_seed")}}

    with study_run("floor", cfg.out, cfg.argv, config, threads=cfg.threads,
                   libraries={"optimum-quanto": _version("optimum-quanto")}) as study:
        outcomes = study.measure_models(models, lambda entry, record: run_model(entry, cfg, record))
        return _finish(study, variants, outcomes)


def _finish(study: StudyRun, variants: tuple[str, ...], outcomes: list[ModelOutcome]) -> StudyResult:
    """The floor's tables, correlations, summary and reports from the models that finished."""
    from harness.stretch_study.floor_report import floor_figure, render_floor_markdown, terminal_floor
    from harness.stretch_study.report import markdown_to_html

    run_dir, manifest = study.run_dir, study.manifest
    config = manifest["config"]
    done = [o.result for o in outcomes if o.error is None]
    info = {o.entry.name: o.result[3] for o in outcomes if o.error is None}
    S = [r for d in done for r in d[0]]
    PR = [r for d in done for r in d[1]]
    PA = [r for d in done for r in d[2]]
    stretch, prompts, pairs = pd.DataFrame(S), pd.DataFrame(PR), pd.DataFrame(PA)
    table, model_table = floor_table(stretch, prompts, pairs, info) if len(prompts) else (pd.DataFrame(), pd.DataFrame())
    contrast = contrasts(prompts, pairs, REFERENCE) if len(prompts) else pd.DataFrame()
    verdict = floor_verdict(contrast) if len(contrast) else {}
    # Trained models alone, then with the random-init controls: across the two groups a correlation mostly
    # measures trained vs untrained, so the first is the one that speaks to the question.
    corr: dict[str, dict[str, Any]] = {"trained": {}, "with_controls": {}}
    for scope, frame in (("trained", model_table[~model_table["control"]] if len(model_table) else model_table),
                         ("with_controls", model_table)):
        for col in ("drift_growth_tokens", "drift_growth_kl"):
            if len(frame):
                corr[scope][col] = dataclasses.asdict(rank_correlation(frame["stretch_product_sigma_rel"], frame[col]))
    for name, df in (("floor", table), ("floor_contrast", contrast), ("floor_models", model_table), ("floor_stretch", stretch),
                     ("floor_prompts", prompts), ("floor_pairs", pairs)):
        rundir.atomic_write_parquet(run_dir / f"{name}.parquet", df)
    summary = study.write_summary("floor_summary.json", {"schema": SCHEMA, "config": config, "variants": list(variants),
                         "table": table.to_dict("records"), "models": model_table.to_dict("records"),
                         "contrast": contrast.to_dict("records"), "verdict": verdict,
                         "rank_correlation": corr, "failed": {m["name"]: m.get("error") for m in manifest["models"] if m.get("status") != "ok"},
                         "variants_info": {m: {v: i.get("error") for v, i in d.items() if i.get("status") == "failed"} for m, d in info.items()}})
    figures = floor_figure(table, model_table, contrast)
    for name, png in figures.items():
        rundir.atomic_write_bytes(run_dir / f"{name}.png", png)
    md = render_floor_markdown(summary)
    rundir.atomic_write_text(run_dir / "floor.md", md)
    rundir.atomic_write_text(run_dir / "floor.html", markdown_to_html(md, figures, "stabprobe floor"))
    return StudyResult(run_dir, study.exit_code, summary, terminal_floor(summary))
