"""`stabprobe run` as a library call: ladder -> audit -> decode -> score -> summary -> report."""

from __future__ import annotations

import dataclasses
import gc
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness import rundir
from harness.audit import AuditRow, audit_pairs
from harness.decode import DECODER_VERSION, DecodeRequest, Generation, decode_all, prompt_key
from harness.embedder import Embedder
from harness.errors import EXIT_MODEL_FAILED, EXIT_OK, InputError
from harness.ladder.records import Ladder
from harness.loading import load_model
from harness.manifest import base_manifest
from harness.registry import ModelEntry
from harness.report_md import render_markdown, terminal_summary
from harness.score import PairScore, PairSides, kept_pairs, score_pairs
from harness.summary import build_summary

DEFAULT_LENGTHS = (64, 512)


@dataclass(frozen=True)
class RunConfig:
    models: tuple[ModelEntry, ...]
    ladder: Ladder
    out: Path = Path("runs")
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    variants: tuple[str, ...] = ("bf16",)
    batch_size: int = 16
    embedder: str | None = None
    argv: tuple[str, ...] = ()
    progress: bool = True


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    exit_code: int
    summary: dict[str, Any]
    terminal: str


def validate_config(cfg: RunConfig) -> None:
    if not cfg.lengths or any(L <= 0 for L in cfg.lengths):
        raise InputError("--lengths", "", "expected positive integers, e.g. 64,512")
    if cfg.batch_size <= 0:
        raise InputError("--batch-size", "", "expected a positive integer")
    for v in cfg.variants:
        if v not in ("bf16", "fp16", "fp32", "int8", "int4"):
            raise InputError("--variants", v, "unknown variant (expected bf16, fp16, fp32, int8, int4)")


def config_record(cfg: RunConfig, embedder_info) -> dict[str, Any]:
    return {
        "models": [m.model_dump() for m in cfg.models],
        "ladder": {
            "name": cfg.ladder.name,
            "source": cfg.ladder.source,
            "sha256": cfg.ladder.source_sha256,
            "prompts": len(cfg.ladder.prompts),
            "pairs": len(cfg.ladder.pairs),
            "rung_counts": cfg.ladder.rung_counts(),
            "skipped_edits": len(cfg.ladder.skipped),
            "skipped": [dataclasses.asdict(s) for s in cfg.ladder.skipped],
        },
        "lengths": list(cfg.lengths),
        "max_new_tokens": max(cfg.lengths),
        "variants": list(cfg.variants),
        "batch_size": cfg.batch_size,
        "decoder_version": DECODER_VERSION,
        "embedder": dataclasses.asdict(embedder_info),
    }


def decode_requests(pairs, audit: Sequence[AuditRow], rendered) -> tuple[list[DecodeRequest], dict[str, tuple[str, str, int]]]:
    """Distinct (prompt, replicate) requests, and for each kept pair the keys of its two sides."""
    kept = {a.pair_id for a in audit if a.kept}
    reqs: dict[tuple[str, int], DecodeRequest] = {}
    sides: dict[str, tuple[str, str, int]] = {}
    for p in pairs:
        if p.pair_id not in kept:
            continue
        ra, rb = rendered[p.prompt_a], rendered[p.prompt_b]
        ka, kb = prompt_key(ra.token_ids), prompt_key(rb.token_ids)
        rep_b = 1 if p.rung == "identical" else 0
        reqs.setdefault((ka, 0), DecodeRequest(ka, ra.token_ids, 0, ra.text))
        reqs.setdefault((kb, rep_b), DecodeRequest(kb, rb.token_ids, rep_b, rb.text))
        sides[p.pair_id] = (ka, kb, rep_b)
    return list(reqs.values()), sides


def generations_frame(gens: list[Generation], lengths: Sequence[int]) -> pd.DataFrame:
    rows = []
    for g in gens:
        d = {f.name: getattr(g, f.name) for f in dataclasses.fields(g) if f.name != "hidden_means"}
        d["gen_ids"] = list(g.gen_ids)
        for k in ("trace_top1_id", "trace_top2_id"):
            d[k] = g.__dict__[k].astype(np.int64).tolist()
        for k in ("trace_top1_logit", "trace_top2_logit", "prompt_end_logprobs"):
            d[k] = g.__dict__[k].astype(np.float32)
        lp = g.prompt_end_logprobs.astype(np.float64)
        d["prompt_end_top1_id"] = int(np.argmax(lp))
        d["prompt_end_top1_prob"] = float(np.exp(lp.max()))
        d["prompt_end_margin"] = float(g.trace_margin[0]) if len(g.trace_margin) else float("nan")
        p = np.exp(lp)
        d["prompt_end_entropy"] = float(-(p[p > 0] * lp[p > 0]).sum())
        d["prompt_end_veff"] = float(1.0 / (p * p).sum())
        for L in lengths:
            d[f"hidden_mean_{L}"] = g.hidden_means[L]
        rows.append(d)
    return pd.DataFrame(rows)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=False)


def run(cfg: RunConfig) -> RunResult:
    validate_config(cfg)
    embedder = Embedder(cfg.embedder)  # an unusable --embedder is an input error: before any directory exists
    run_dir = rundir.new_run_dir(cfg.out)
    manifest = base_manifest("run", list(cfg.argv), config_record(cfg, embedder.info))
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    audit_rows: list[AuditRow] = []
    gen_frames: list[pd.DataFrame] = []
    scores: list[PairScore] = []
    truncated = 0
    try:
        for entry in cfg.models:
            for variant in cfg.variants:
                record: dict[str, Any] = {"name": entry.name, "variant": variant, "source": entry.source,
                                          "requested_revision": entry.revision, "timings_s": {}}
                manifest["models"].append(record)
                t0 = time.perf_counter()
                try:
                    loaded = load_model(entry, variant)
                except Exception as exc:  # noqa: BLE001 - any load failure is recorded; the run goes on
                    record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                                  traceback=traceback.format_exc(limit=3))
                    record["timings_s"]["load"] = round(time.perf_counter() - t0, 3)
                    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
                    continue
                record.update(dataclasses.asdict(loaded.info))
                record["timings_s"]["load"] = loaded.info.load_seconds
                try:
                    t = time.perf_counter()
                    rows, rendered = audit_pairs(entry.name, loaded.tokenizer, loaded.policy, cfg.ladder.pairs,
                                                 context_len=loaded.info.context_length, max_new_tokens=max(cfg.lengths))
                    if variant == cfg.variants[0]:
                        audit_rows += rows  # the audit depends on the tokenizer, not the variant
                    record["timings_s"]["audit"] = round(time.perf_counter() - t, 3)

                    t = time.perf_counter()
                    reqs, sides = decode_requests(cfg.ladder.pairs, rows, rendered)
                    with _progress(len(reqs), f"decode {entry.name}/{variant}", cfg.progress) as bar:
                        gens = decode_all(loaded, reqs, max(cfg.lengths), cfg.lengths, cfg.batch_size, bar.update)
                    record["timings_s"]["decode"] = round(time.perf_counter() - t, 3)
                    record["decoded_prompts"] = len(reqs)
                    record["generated_tokens"] = int(sum(len(g.gen_ids) for g in gens))
                    gen_frames.append(generations_frame(gens, cfg.lengths))

                    t = time.perf_counter()
                    by_key = {(g.prompt_key, g.replicate): g for g in gens}
                    pair_sides = [PairSides(p, by_key[(sides[p.pair_id][0], 0)], by_key[(sides[p.pair_id][1], sides[p.pair_id][2])])
                                  for p in kept_pairs(cfg.ladder.pairs, rows)]
                    tok = loaded.tokenizer
                    new_scores, texts = score_pairs(
                        pair_sides, cfg.lengths, lambda ids: tok.decode(list(ids), skip_special_tokens=False), embedder.encode
                    )
                    scores += new_scores
                    n_trunc = embedder.count_truncated(texts) if texts else 0
                    truncated += n_trunc
                    record["embedded_texts"] = len(texts)
                    record["embedder_truncated_texts"] = n_trunc
                    record["timings_s"]["score"] = round(time.perf_counter() - t, 3)
                    record["status"] = "ok"
                except Exception as exc:  # noqa: BLE001 - recorded per model, the run goes on
                    record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                                  traceback=traceback.format_exc(limit=5))
                finally:
                    del loaded
                    gc.collect()
                rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    except BaseException as exc:
        manifest["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
        raise

    audit_df = pd.DataFrame([dataclasses.asdict(a) for a in audit_rows], columns=[f.name for f in dataclasses.fields(AuditRow)])
    pairs_df = pd.DataFrame([dataclasses.asdict(s) for s in scores], columns=[f.name for f in dataclasses.fields(PairScore)])
    gens_df = pd.concat(gen_frames, ignore_index=True) if gen_frames else pd.DataFrame()
    rundir.atomic_write_parquet(run_dir / rundir.AUDIT, audit_df)
    rundir.atomic_write_parquet(run_dir / rundir.GENERATIONS, gens_df)
    rundir.atomic_write_parquet(run_dir / rundir.PAIRS, pairs_df)

    failed = [m for m in manifest["models"] if m.get("status") != "ok"]
    manifest["status"] = "complete"
    manifest["embedder_truncated_texts"] = truncated
    summary = build_summary(pairs_df, audit_df, manifest)
    manifest["determinism"] = summary["determinism"]
    rundir.atomic_write_json(run_dir / rundir.SUMMARY, summary)
    rundir.atomic_write_text(run_dir / rundir.REPORT_MD, render_markdown(summary, manifest))
    rundir.atomic_write_json(run_dir / rundir.MANIFEST, manifest)
    return RunResult(run_dir, EXIT_MODEL_FAILED if failed else EXIT_OK, summary, terminal_summary(summary))


def rebuild_report(run_dir: Path) -> dict[str, Any]:
    """`stabprobe report`: summary.json and report.md from the parquet files and the manifest alone."""
    import json

    run_dir = Path(run_dir)
    for name in (rundir.MANIFEST, rundir.PAIRS, rundir.AUDIT):
        if not (run_dir / name).is_file():
            raise InputError(str(run_dir), name, "missing: not a finished run directory")
    manifest = json.loads((run_dir / rundir.MANIFEST).read_text(encoding="utf-8"))
    pairs_df = pd.read_parquet(run_dir / rundir.PAIRS)
    audit_df = pd.read_parquet(run_dir / rundir.AUDIT)
    summary = build_summary(pairs_df, audit_df, manifest)
    rundir.atomic_write_json(run_dir / rundir.SUMMARY, summary)
    rundir.atomic_write_text(run_dir / rundir.REPORT_MD, render_markdown(summary, manifest))
    return summary
