"""Decode at a real vocabulary: the harness against plain batched ``generate`` on the same model and prompts (issue 19).

Models: random-init ``Qwen3ForCausalLM`` with the published Qwen3 tokenizer and
its full embedding size V = 151,936 (harness.demo.random_init), bf16, built in a
temporary directory: ``h64`` (hidden 64, 2 layers) and ``h1024`` (hidden 1,024,
4 layers: Qwen3-0.6B's width and vocabulary). Ladder: the first base prompts (8 and 4) of
``ladders/default.yaml`` with all their pairs (23 per prompt), one torch thread.

- harness (timed from the pair list): ``audit_pairs`` + ``decode_requests`` +
  ``decode_all`` (a run's default batching and batch size: ``rows``, 48, see
  harness.decode.rows; every capture: top-2 per
  step, post-norm states, hidden means, prompt-end rows) + ``complete`` (the
  closed-form traces at side A's first divergence of every pair) + JS and both
  KLs of every pair's prompt ends. Everything a cell does before embedding.
- generate over every pair side (the user's alternative): for every kept pair,
  both sides, ``model.generate(do_sample=False, max_new_tokens=L)`` in batches
  of 16 (left-padded, sorted by length so padding is minimal), no captures.
  Target: harness >= 2x faster.
- generate over the distinct prompts (the price of capture): the same call on
  exactly the requests the harness decodes (identical-rung second sides
  included). Target: harness <= 1.3x its time.
- identical rung: both decodes of every identical pair give the same tokens and
  JS = KL = 0 exactly (computed from the full rows in the cell).
- traces / decode: the most a run can spend on traces over seconds in
  ``decode_all`` (target <= 0.25). The most: seconds per state (timed at every
  step of one batch of 16 outputs) times the states a run can evaluate, one
  per distinct (side A output, step) a pair reads, min(pairs on that output,
  L) per output, as if every pair diverged (the run itself evaluates only
  those that do: its own traces seconds are in the notes).
- bytes per decoded prompt: a full ``run()`` (h64, same prompts, cache on):
  every byte under the run directory and the cache directory, over the
  manifest's decoded prompts (target <= 10 KB; also reported with
  ``--store-full-dist``, which has no target).
- peak memory of one cell of 900 prompts (h64): a separate process runs
  ``run()`` on one cell of 900 distinct prompts and reports its peak resident
  set, ``VmHWM`` (target <= 2 GB).

Before issue 19 (same machine, h64, 16 prompts x 64 steps in one batch):
``generate`` 3.8 s, harness 21.3 s, of which the traces 17.3 s (81%);
290 KB per prompt in generations.parquet; 6.2 GB peak RSS for that one batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Outcome, Row, at_least, fmt_s, timed

TOKENIZER = REPO / "tests" / "fixtures" / "tokenizers" / "qwen3"
SHAPES = {
    # name: (hidden, layers, head_dim, base prompts, quick base prompts, length)
    "h64": (64, 2, 32, 8, 3, 64),
    "h1024": (1024, 4, 128, 4, 1, 64),
}
PAIR_SIDES_TARGET = 2.0
DISTINCT_TARGET = 1.3
TRACE_SHARE_TARGET = 0.25
BYTES_TARGET = 10_000
RSS_TARGET_MB = 2048
RSS_PROMPTS = 900
RSS_LENGTH = 8


def _build(tmp: Path, name: str) -> Path:
    from harness.demo.random_init import make_random_qwen3

    hidden, layers, head_dim, *_ = SHAPES[name]
    out = tmp / f"qwen3-{name}"
    if not (out / "config.json").is_file():
        import transformers

        transformers.utils.logging.disable_progress_bar()
        make_random_qwen3(TOKENIZER, out, hidden=hidden, layers=layers, head_dim=head_dim)
    return out


def _pairs(n_prompts: int):
    from harness.ladder.load import load_ladder

    ladder = load_ladder(REPO / "ladders" / "default.yaml")
    keep = {p.id for p in ladder.prompts[:n_prompts]}
    return ladder, tuple(p for p in ladder.pairs if p.prompt_id in keep)


def plain_generate(loaded, id_lists, max_new_tokens: int, batch_size: int = 16) -> int:
    """Batched greedy ``generate`` (left-padded, sorted by length), no captures; returns decode steps."""
    import torch

    model, info = loaded.model, loaded.info
    order = sorted(id_lists, key=len)
    steps = 0
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            width = max(len(x) for x in batch)
            ids = torch.full((len(batch), width), info.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, x in enumerate(batch):
                ids[b, width - len(x):] = torch.tensor(x)
                mask[b, width - len(x):] = 1
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=info.pad_token_id, eos_token_id=list(info.eos_token_ids))
            steps += int(out.shape[0] * (out.shape[1] - width))
    return steps


def _harness(loaded, entry, pairs, L: int) -> dict:
    from harness.audit.tokens import audit_pairs
    from harness.run.config import RunConfig
    from harness.decode.greedy import decode_all
    from harness.run.cell import decode_requests
    from harness.run.complete import complete, one_token_prompt_ends
    from harness.score.pairs import kept_pairs, prompt_end_scores

    t0 = time.perf_counter()
    rows, rendered = audit_pairs(entry.name, loaded.tokenizer, loaded.policy, pairs,
                                 context_len=loaded.info.context_length, max_new_tokens=L)
    reqs, sides = decode_requests(pairs, rows, rendered)
    size, mode = RunConfig.batch_size, RunConfig.batching  # what a run uses unless told otherwise
    t_dec, gens = timed(lambda: decode_all(loaded, reqs, L, (L,), size, None, mode, traces="deferred"))
    kept = kept_pairs(pairs, rows)
    redecode = lambda subset: decode_all(loaded, subset, L, (L,), size, None, mode, traces="deferred")  # noqa: E731
    ends = one_token_prompt_ends(loaded, size, mode)  # neither runs here: every state and full row is in memory
    t_cmp, (gens, counts, _) = timed(lambda: complete(loaded, gens, reqs, kept, sides, (L,), redecode, ends))
    by = {(g.prompt_key, g.replicate): g for g in gens}
    t_pe, scores = timed(lambda: {p.pair_id: prompt_end_scores(by[(sides[p.pair_id][0], 0)],
                                                               by[(sides[p.pair_id][1], sides[p.pair_id][2])])
                                  for p in kept})
    total = time.perf_counter() - t0
    ident = [p for p in kept if p.rung == "identical"]
    exact = sum(by[(sides[p.pair_id][0], 0)].gen_ids == by[(sides[p.pair_id][1], 1)].gen_ids
                and scores[p.pair_id][:3] == (0.0, 0.0, 0.0) for p in ident)
    return {"seconds": total, "decode_s": t_dec, "sides": sides, "traces_s": t_cmp, "prompt_end_pairs_s": t_pe, "kept": kept,
            "rendered": rendered, "reqs": reqs, "steps": sum(len(g.trace_top1_id) for g in gens),
            "identical": len(ident), "identical_exact": exact, "completion": counts,
            "batching": f"{loaded.batching_used}, batches of {size}"}


def _compare(tmp: Path, name: str, quick: bool) -> tuple[list[Row], dict]:
    from harness.models.loading import load_model
    from harness.models.registry import entry_for_local_dir

    *_, n_full, n_quick, L = SHAPES[name]
    entry = entry_for_local_dir(_build(tmp, name))
    loaded = load_model(entry, "bf16")
    _, pairs = _pairs(n_quick if quick else n_full)
    warm = pairs[:2]
    _harness(loaded, entry, warm, 2)  # lazy initialisation of both routes, untimed
    h = _harness(loaded, entry, pairs, L)
    sides = [list(h["rendered"][t].token_ids) for p in h["kept"] for t in (p.prompt_a, p.prompt_b)]
    distinct = [list(r.token_ids) for r in h["reqs"]]
    plain_generate(loaded, distinct[:2], 2)
    t_sides, steps_sides = timed(lambda: plain_generate(loaded, sides, L))
    t_dist, steps_dist = timed(lambda: plain_generate(loaded, distinct, L))
    per_state, n_states = _trace_cost(loaded, h["reqs"], L)
    # What a run spends on traces at most: one state per distinct (side A output, step) a pair can read. A run
    # evaluates side A's state before its first divergence, once per output and step (harness.run.complete), so
    # an output shared by n pairs costs at most min(n, L) states, every pair diverging.
    per_a: dict[str, int] = {}
    for p in h["kept"]:
        per_a[h["sides"][p.pair_id][0]] = per_a.get(h["sides"][p.pair_id][0], 0) + 1
    bound = sum(min(n, L) for n in per_a.values())
    worst = per_state * bound
    fast, price, share = t_sides / h["seconds"], h["seconds"] / t_dist, worst / h["decode_s"]
    what = f"{name}: V=151,936, {len(h['kept'])} pairs, {len(distinct)} distinct prompts x {L} tokens"
    rows = [
        at_least(f"real_vocab/{name}/vs_pair_sides",
                 f"harness {fmt_s(h['seconds'])} ({h['steps'] / h['seconds']:.0f} tok/s) vs generate over "
                 f"{len(sides)} pair sides {fmt_s(t_sides)} ({steps_sides / t_sides:.0f} tok/s)", fast, PAIR_SIDES_TARGET),
        Row(f"real_vocab/{name}/vs_distinct", f"harness {fmt_s(h['seconds'])} vs generate over the {len(distinct)} "
            f"distinct prompts {fmt_s(t_dist)} ({steps_dist / t_dist:.0f} tok/s)", f"<= {DISTINCT_TARGET:g}x its time",
            price, f"{price:.2f}x", price <= DISTINCT_TARGET),
        Row(f"real_vocab/{name}/traces", f"traces at most {fmt_s(worst)} ({bound} states for {len(h['kept'])} pairs x "
            f"{fmt_s(per_state)} per state) vs decode {fmt_s(h['decode_s'])}", f"<= {TRACE_SHARE_TARGET:g} of decode", share, f"{share:.3f}",
            share <= TRACE_SHARE_TARGET),
        Row(f"real_vocab/{name}/identical", f"{h['identical_exact']}/{h['identical']} identical pairs: same tokens, "
            "JS = KL = 0", "all exact", None, "-", bool(h["identical"]) and h["identical_exact"] == h["identical"]),
    ]
    rows[0].info.append(f"{what}; harness ({h['batching']}) phases: decode {fmt_s(h['decode_s'])}, traces {fmt_s(h['traces_s'])}, "
                        f"prompt-end JS/KL of every pair {fmt_s(h['prompt_end_pairs_s'])}; completion {h['completion']}; "
                        f"traces at every step of one batch: {n_states} states in {fmt_s(per_state * n_states)} "
                        f"({fmt_s(per_state)} per state; a run evaluates at most one state per diverging pair and never one output's step twice)")
    figures = {"pairs": len(h["kept"]), "distinct_prompts": len(distinct), "pair_sides": len(sides), "length": L,
               "harness_s": h["seconds"], "harness_decode_s": h["decode_s"], "harness_traces_s": h["traces_s"],
               "harness_prompt_end_pairs_s": h["prompt_end_pairs_s"], "harness_steps": h["steps"],
               "harness_batching": h["batching"],
               "generate_pair_sides_s": t_sides, "generate_pair_sides_steps": steps_sides,
               "generate_distinct_s": t_dist, "generate_distinct_steps": steps_dist,
               "speedup_vs_pair_sides": fast, "ratio_vs_distinct": price, "traces_share": share,
               "identical": h["identical"], "identical_exact": h["identical_exact"], "completion": h["completion"],
               "trace_s_per_state": per_state, "trace_states_timed": n_states, "traces_worst_s": worst,
               "traces_worst_states": bound}
    del loaded
    return rows, figures


def _trace_cost(loaded, reqs, L: int) -> tuple[float, int]:
    """Seconds per state of the closed-form traces, timed over every step of one batch of 16 outputs."""
    from harness.decode.greedy import decode_all
    from harness.decode.traces import fill_traces

    gens = decode_all(loaded, list(reqs[:16]), L, (L,), 16, None, "padded", traces="deferred")
    t, _ = timed(lambda: fill_traces(loaded, gens))
    n = sum(len(g.trace_top1_id) for g in gens)
    return t / n, n


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _bytes_per_prompt(tmp: Path, quick: bool) -> tuple[list[Row], dict]:
    from harness.models.registry import entry_for_local_dir
    from harness.run.pipeline import RunConfig, run

    *_, n_full, n_quick, L = SHAPES["h64"]
    entry = entry_for_local_dir(_build(tmp, "h64"))
    figures = {}
    for full in (False, True):
        # the opt-in run (no target) on the smaller prompt set: its size is known to be ~1 MB per prompt
        ladder, pairs = _pairs(n_quick if quick or full else n_full)
        out, cache = tmp / f"runs-{full}", tmp / f"cache-{full}"
        res = run(RunConfig(models=(entry,), ladder=dataclasses.replace(ladder, pairs=pairs), out=out, lengths=(L,),
                            progress=False, cache_dir=cache, store_full_dist=full))
        manifest = json.loads((res.run_dir / "manifest.json").read_text(encoding="utf-8"))
        n = manifest["decoded_prompts"]
        run_b, cache_b = _dir_bytes(res.run_dir), _dir_bytes(cache)
        gens_b = sum(f.stat().st_size for f in res.run_dir.rglob("generations.parquet"))
        figures["full" if full else "compact"] = {"decoded_prompts": n, "run_dir_bytes": run_b, "cache_bytes": cache_b,
                                                  "per_prompt": (run_b + cache_b) / max(n, 1),
                                                  "generations_parquet_per_prompt": gens_b / max(n, 1)}
    c, f = figures["compact"], figures["full"]
    row = Row("real_vocab/bytes_per_prompt",
              f"{c['per_prompt'] / 1e3:.1f} KB per decoded prompt (run dir {c['run_dir_bytes'] / 1e3:.0f} KB + cache "
              f"{c['cache_bytes'] / 1e3:.0f} KB, {c['decoded_prompts']} prompts x {L} tokens)",
              f"<= {BYTES_TARGET / 1e3:g} KB", c["per_prompt"], f"{c['per_prompt'] / 1e3:.1f} KB",
              c["per_prompt"] <= BYTES_TARGET)
    row.info.append(f"bytes: the run directory's generations.parquet copies (cell + run) hold "
                    f"{c['generations_parquet_per_prompt'] / 1e3:.1f} KB per prompt; the rest is reports, manifest, "
                    "pairs, drift, audit and the cache's copies of them")
    row.info.append(f"bytes: with --store-full-dist {f['per_prompt'] / 1e3:.0f} KB per decoded prompt "
                    f"(run dir {f['run_dir_bytes'] / 1e6:.1f} MB + cache {f['cache_bytes'] / 1e6:.1f} MB; no target)")
    return [row], figures


def _rss(tmp: Path) -> tuple[list[Row], dict]:
    model = _build(tmp, "h64")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t, proc = timed(lambda: subprocess.run([sys.executable, "-m", "benchmarks.bench_real_vocab", "--rss-cell", str(model),
                                            str(tmp / "rss-runs")], cwd=REPO, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise RuntimeError(f"rss cell failed: {proc.stderr[-500:]}")
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = fig["max_rss_mb"]
    row = Row("real_vocab/peak_rss_cell", f"{mb:.0f} MB peak RSS, one cell of {fig['decoded_prompts']} prompts x "
              f"{RSS_LENGTH} tokens at V=151,936 ({fmt_s(t)})", f"<= {RSS_TARGET_MB} MB", mb, f"{mb:.0f} MB",
              mb <= RSS_TARGET_MB and fig["decoded_prompts"] >= RSS_PROMPTS)
    return [row], fig


def _peak_rss_mb() -> float:
    """Peak resident set of this process image: VmHWM. Not ru_maxrss: Linux keeps that across fork + exec, so a
    child started by the benchmark reported the parent's 3.1 GB (measured) instead of its own 1.35 GB."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_cell(model_dir: str, out: str) -> None:
    """Child process: one cell of RSS_PROMPTS distinct prompts (base + trailing-space variant), then its peak RSS."""
    import torch

    from harness.ladder.records import PromptPair
    from harness.models.registry import entry_for_local_dir
    from harness.run.pipeline import RunConfig, run

    torch.set_num_threads(1)
    ladder, _ = _pairs(1)
    pairs = []
    for i in range(RSS_PROMPTS // 2):
        text = f"Task {i:04d}: reverse the word apple."
        pairs.append(PromptPair(f"p{i:04d}/noop_format/trailing_space", f"p{i:04d}", "noop_format", "trailing_space",
                                text, text + " ", "generated"))
    res = run(RunConfig(models=(entry_for_local_dir(Path(model_dir)),), ladder=dataclasses.replace(ladder, pairs=tuple(pairs)),
                        out=Path(out), lengths=(RSS_LENGTH,), progress=False, cache_dir=None))
    manifest = json.loads((res.run_dir / "manifest.json").read_text(encoding="utf-8"))
    print(json.dumps({"max_rss_mb": _peak_rss_mb(),
                      "decoded_prompts": manifest["decoded_prompts"], "status": manifest["status"]}))


def run(quick: bool = False) -> Outcome:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    rows: list[Row] = []
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="stabprobe-realvocab-") as d:
        tmp = Path(d)
        for name in SHAPES:
            r, f = _compare(tmp, name, quick)
            rows += r
            figures[name] = f
        r, figures["bytes"] = _bytes_per_prompt(tmp, quick)
        rows += r
        r, figures["rss"] = _rss(tmp)
        rows += r
    return Outcome(rows, figures)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-cell":
        _rss_cell(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
