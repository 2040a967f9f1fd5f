"""Markdown report and the terminal summary, both from summary.json.

The tables themselves are built once, by :func:`report_tables`, and rendered
by both this module (Markdown) and ``harness.report.html`` (HTML), so the two
reports always carry the same numbers.
"""

from __future__ import annotations

from typing import Any

from harness.ladder.records import NEGATIVE_CONTROL, POSITIVE_CONTROL, RUNGS
from harness.score.records import MetricSpec
from harness.score.registry import report_metrics
from harness.summary.build import SPREAD_METRIC
from harness.summary.stats import MIN_CI_PROMPTS, letter_index, split_letters
from harness.report.records import Table
from harness.report.answer_tables import answer_tables, terminal_answers, tf_drift_report_table
from harness.report.floor_tables import noise_floor_table, unmeasurable_variants
from harness.report.variance_tables import variance_report_tables
from harness.report.text import fmt, md_cell, md_code, md_text, mde_text, pct as _pct, strip_control


def _diff(x: float | None, ci: list[float] | None) -> str:
    if x is None:
        return "-"
    lo, hi = ci or (float("nan"), float("nan"))
    return f"{x:+.4f} [{lo:+.4f}, {hi:+.4f}]" if lo == lo else f"{x:+.4f} [-]"


def _collapse(verdict: Any) -> str:
    # None: the reference itself; a bool: a summary.json from before the prompt-level verdict.
    if verdict is None:
        return "- (reference)"
    return ("collapse" if verdict else "no collapse") if isinstance(verdict, bool) else str(verdict)


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def run_lines(summary: dict[str, Any], manifest: dict[str, Any], text=None, code=None) -> list[str]:
    """The run at a glance: status, provenance, determinism verdict, counts.

    ``text``/``code`` quote what the harness did not write (the command line, the ladder's name and source):
    Markdown escaping by default (harness.report.text.md_text / md_code); the HTML report passes its own."""
    text = text or md_text
    code = code or md_code
    det = summary["determinism"]
    cfg = manifest.get("config", {})
    ladder = cfg.get("ladder", {})
    models = summary.get("models", [])
    ok = sum(1 for m in models if m.get("status") == "ok")
    n_flags = len(summary.get("flags") or [])
    return [
        f"status: **{text(manifest.get('status'))}**; command: {code(' '.join(manifest.get('argv', [])))}",
        f"harness {manifest.get('harness', {}).get('version')} at commit {manifest.get('harness', {}).get('commit')}",
        f"ladder: {text(ladder.get('name'))} ({text(ladder.get('source'))}); lengths: {cfg.get('lengths')}",
        f"models × variants: {ok} ok, {len(models) - ok} failed; scored cells: {len(summary.get('cells', []))}; flags raised: {n_flags}",
        f"determinism: **{det['verdict']}** ({det['nonzero_rows']} of {det['identical_rows']} identical-rung rows non-zero)",
    ]


def _spread(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n_prompts"):
        return "-"
    return f"{fmt(s['mean'])} [{fmt(s['ci95'][0])}, {fmt(s['ci95'][1])}] ({s['n_prompts']})"


def _metric_cell(c: dict[str, Any], m: MetricSpec) -> str:
    s = c.get(m.name)
    if not s:
        return "-"
    show = fmt if m.report_format == "fixed" else (lambda x: f"{x:.3g}")
    lo, hi = s["ci95"][:2]
    ci = f" [no CI: {s['ci_note']}]" if s.get("ci_note") and lo != lo else f" [{show(lo)}, {show(hi)}]"
    # The mean is over the finite values only: how many were missing is said next to it, in every row.
    missing = f" ({s['n_missing']} of {s['n_missing'] + s.get('n_pairs', 0)} missing)" if s.get("n_missing") else ""
    return (f"{show(s['mean'])}{ci}" if m.report_ci else show(s["mean"])) + missing


def _cells_table(summary: dict[str, Any]) -> Table:
    """The registry's report metrics (harness.score.registry.report_metrics), each shown when any cell has it;
    the spread beside its metric, the pairs without an answer span after the answer-span metrics."""
    cells = summary["cells"]
    shown = [m for m in report_metrics() if any(m.name in c for c in cells) or m.name == SPREAD_METRIC]
    # A metric only some runs compute (the twin divergence without --twin) is left out where no cell has a value.
    shown = [m for m in shown if not m.optional or any((c.get(m.name) or {}).get("n_pairs") for c in cells)]
    last_answer = max((i for i, m in enumerate(shown) if m.answer_span), default=None)
    header = ["model", "variant", "rung", "L", "prompts", "pairs", "cluster"]
    for i, m in enumerate(shown):
        header.append(m.report)
        if m.name == SPREAD_METRIC:
            header.append(f"{m.report}: MDE (80% power)")
            header.append("spread over a prompt's variants [95% CI] (prompts)")
        if i == last_answer:
            header.append("no answer span")
    header.append("diverged share")
    rows = []
    for c in cells:
        row = [c["model"], str(c["variant"]), c["rung"], str(c["length"]), str(c.get("n_prompts", "-")), str(c["n_pairs"]),
               c.get("cluster") or "-"]
        for i, m in enumerate(shown):
            row.append(_metric_cell(c, m))
            if m.name == SPREAD_METRIC:
                row.append(mde_text((c.get(m.name) or {}).get("mde")))
                row.append(_spread(c.get("spread")))
            if i == last_answer:
                miss = c.get("answer_missing")
                row.append(f"{miss['count']} ({miss['share']:.0%})" if miss else "-")
        row.append(fmt(c["diverged_share"]))
        rows.append(row)
    return Table("distances", "Distances per rung (mean [95% bootstrap CI])", header, rows,
                 note=("Means are over pairs; the 95% CI resamples base prompts (a prompt keeps all its pairs, which share "
                       "its output), so its width reflects the number of prompts, not of pairs; no interval (nan) is "
                       f"given from fewer than {MIN_CI_PROMPTS} base prompts, where it would cover less than it claims. "
                       "MDE: the smallest shift of the mean away from a fixed value (a gate threshold) that the run's "
                       "prompts detect with 80% power at alpha 0.05 (∞ below 6 prompts). "
                       "Cluster: models of one variant × rung × length sharing a letter are not separated by the "
                       "paired permutation test on per-prompt embedding distance differences (Holm-corrected); "
                       "the letters are clusters, not ranks. "
                       "Spread (FormatSpread): per base prompt, the largest minus the smallest embedding distance over "
                       "its pairs on the rung, averaged over the prompts with two pairs or more; on the format rung, how "
                       "far apart the best and the worst format of one prompt land. '-' when no prompt has two pairs. "
                       "No answer span: pairs where a side's scaffold never closed; their answer-span distances are "
                       "missing (not 0) and the answer-span mean is over the other pairs. "
                       "Twin KL / top-1 change / LLR per token (with --twin): one output read by the same model after "
                       "both prompts "
                       "(teacher-forced; 'a's output' reads side A's greedy tokens, 'b's output' side B's): a belief "
                       "shift shows there, one low-margin flip amplified by free running does not; missing where the "
                       "engine is not HF."),
                 empty="no pairs were scored")


def _unresponsive_table(rows: list[dict[str, Any]]) -> Table:
    # Next to collapse on purpose: the same trap (a model that stops reacting to its prompt), seen
    # without a reference variant.
    return Table("unresponsive", "Unresponsive check (no reference needed; collapse is the same trap against a baseline)",
                 ["model", "variant", "L", "distinct outputs / base prompts", POSITIVE_CONTROL, NEGATIVE_CONTROL,
                  "gap per prompt [95% CI]", "unresponsive"],
                 [[r["model"], str(r["variant"]), str(r["length"]), f"{r['distinct_outputs']} / {r['base_prompts']}",
                   fmt(r[POSITIVE_CONTROL]), fmt(r[NEGATIVE_CONTROL]),
                   f"{fmt(r['gap'])} [{fmt(r['gap_ci95'][0])}, {fmt(r['gap_ci95'][1])}]",
                   "-" if r["unresponsive"] is None else ("yes" if r["unresponsive"] else "no")] for r in rows],
                 note=("Unresponsive when fewer than half the base prompts get distinct outputs, the positive control's "
                       "mean embedding distance is under 0.3, or its per-prompt excess over no-op formatting has a "
                       "bootstrap CI that reaches 0."),
                 bold_rows={i for i, r in enumerate(rows) if r["unresponsive"]}, empty="no pairs were scored")


def _drift_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The drift rows worth a line, and what to say when none is: a model that ran only its reference variant
    would show itself against itself (drift 0 by construction)."""
    if not rows:
        return [], "no pairs were scored"
    compared = {r["model"] for r in rows if r["variant"] != r["reference"]}
    kept = [r for r in rows if r["model"] in compared]
    if kept:
        return kept, ""
    refs = sorted({f"{r['model']} ({r['reference']})" for r in rows})
    return [], ("no drift to measure: every model ran only its reference variant (" + ", ".join(refs) + "), and a "
                "variant against itself drifts 0 by construction; add one, e.g. --variants bf16,int8")


def _cluster_tables(summary: dict[str, Any]) -> list[Table]:
    clusters = summary.get("clusters") or []
    tests = summary.get("tests") or {}
    rows, sep_rows, bold = [], [], set()
    # A variant with one model has nothing to cluster: said once below, not as rows of "0 of 0".
    alone = sorted({f"{c['models'][0]['model']} ({c['variant']})" for c in clusters if len(c["models"]) < 2})
    for c in clusters:
        if len(c["models"]) < 2:
            continue
        by_letter: dict[str, list[str]] = {}
        for m in c["models"]:
            for ch in split_letters(m["letters"]):
                by_letter.setdefault(ch, []).append(m["model"])
        tested = [x for x in c["comparisons"] if x["p"] is not None]
        rows.append([str(c["variant"]), c["rung"], str(c["length"]), str(len(c["models"])),
                     "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(by_letter.items(), key=lambda kv: letter_index(kv[0]))),
                     f"{sum(x['separated'] for x in tested)} of {len(tested)}"])
        for x in c["comparisons"]:
            verdict = ("separated" if x["separated"] else "not separated") if x["p"] is not None else "no shared pairs"
            sep_rows.append([str(c["variant"]), c["rung"], str(c["length"]), x["a"], x["b"], str(x.get("n_prompts", "-")),
                             str(x["n_shared"]), _diff(x["mean_diff"], x.get("diff_ci95")), _p(x["p"]), _p(x["p_holm"]),
                             verdict, mde_text(x.get("mde"))])
            if x["separated"]:
                bold.add(len(sep_rows) - 1)
    note = (f"{tests.get('kind', 'paired permutation').capitalize()} test, unit: {tests.get('unit', 'pair')}; statistic: "
            f"{tests.get('statistic', 'the mean difference')} ({tests.get('permutations')} sign patterns or all of them, "
            f"seed {tests.get('seed')}). Multiplicity: {tests.get('correction', 'Holm')}, one family = "
            f"{tests.get('family', 'one variant × rung × length')} ({tests.get('families', '?')} families, at most "
            f"{tests.get('family_size_max', '?')} tests each, {tests.get('tests_total', '?')} tests in all); separated when "
            f"the adjusted p < {tests.get('alpha')}. The error rate holds per family: if no model differed anywhere, "
            f"the expected number of families showing a false separation is "
            f"{tests.get('expected_false_separations_if_no_model_differs', '?')}.")
    return [
        Table("clusters", "Clusters (compact letter display)",
              ["variant", "rung", "L", "models", "clusters", "pairs of models separated"], rows,
              note=note + (f" Not clustered, the only model of its variant: {', '.join(alone)}." if alone else ""),
              empty=("nothing to cluster: clusters compare the models of one variant, and every variant has one model"
                     + (f" ({', '.join(alone)})" if alone else "")) if alone else "no cells to cluster"),
        Table("separated", "Model comparisons per rung (separated pairs in bold)",
              ["variant", "rung", "L", "model a", "model b", "prompts", "shared pairs", "mean(a − b) [95% CI]", "p",
               "p (Holm)", "verdict", "MDE (80% power)"], sep_rows,
              note=("Every pair of models on every rung, tested on the pairs both were scored on. The CI resamples base "
                    f"prompts; none is given from fewer than {MIN_CI_PROMPTS} prompts. MDE: the smallest true difference "
                    f"this test detects with 80% power at alpha {tests.get('alpha')} given the run's prompts and the "
                    "spread of their per-prompt differences (∞: too few prompts for any sign-flip p-value to reach "
                    "alpha); a difference smaller than the MDE that is 'not separated' is not evidence of no "
                    "difference. `stabprobe plan RUN_DIR --difference D` says how many base prompts D needs."),
              bold_rows=bold, empty=("no two models of one variant share a rung, so there is nothing to compare"
                                     + (f" ({', '.join(alone)} ran alone)" if alone else ""))),
    ]


def _engines_table(rows: list[dict[str, Any]]) -> Table:
    def n(x):
        return "-" if x is None else str(x)

    body = [[r["model"], str(r["variant"]), r["engine"], n(r.get("engine_version")), n(r.get("attention_backend")),
             {True: "on", False: "off", None: "-"}[r.get("batch_invariant")], r["capture"], str(r["outputs"]),
             f"{r['fully_agreeing']}/{r['probed']}" if r["probed"] else "-",
             f"{r['agreeing_steps']}/{r['steps']}" if r["probed"] else "-",
             "-" if r.get("min_margin_at_disagreement") is None else f"{r['min_margin_at_disagreement']:.4g}"]
            for r in rows]
    return Table("engines", "Engines and probe agreement",
                 ["model", "variant", "engine", "version", "attention", "batch-invariant", "readings", "outputs",
                  "outputs reproduced", "steps reproduced", "min margin at disagreement"], body,
                 note=("readings 'probe': per-step numbers from one teacher-forced HF forward over prompt + the engine's "
                       "tokens; 'reproduced' counts outputs (steps) where the probe's argmax is the engine's token. "
                       "A disagreement is a finding about the two engines' numerics; tokens are never changed. "
                       "The margin there is logit(probe argmax) - logit(engine token), 0 for an exact tie."),
                 bold_rows={i for i, r in enumerate(rows) if r["probed"] and r["fully_agreeing"] != r["probed"]},
                 empty="no generations")


TEMPLATE_NOTE = ("Chat template: the model's own (its tokenizer's), a registry file (the entry's .jinja, used in its "
                 "place), or none: the raw prompt text is decoded (the entry says `chat_template: none`, or a model "
                 "directory has no template); '-' when the model did not load.")


def template_used(m: dict[str, Any]) -> str:
    """Which chat template a model's prompts went through, and where it came from (the manifest's policy)."""
    policy = m.get("chat_template_policy")
    if policy is None:
        return "-"
    if policy == "none":
        return "none (raw prompt text)"
    sha = f", sha256 {m['chat_template_sha256'][:12]}" if m.get("chat_template_sha256") else ""
    source = m.get("chat_template_source")
    return f"model's own (tokenizer{sha})" if source in (None, "tokenizer") else f"registry file {source}{sha}"


def report_tables(summary: dict[str, Any], manifest: dict[str, Any]) -> list[Table]:
    """Every table of the report, in reading order; both renderers use this list."""
    models = manifest.get("models", [])
    failed = [m for m in models if m.get("status") != "ok"]
    det = summary["determinism"]
    tables = [
        Table("models", "Models", ["model", "variant", "status", "revision", "chat template", "error"],
              [[m["name"], str(m.get("variant")), str(m.get("status")), str(m.get("resolved_revision") or "")[:19],
                template_used(m), (m.get("error") or "")[:120]] for m in models],
              note=TEMPLATE_NOTE, empty="the manifest lists no models"),
        Table("failed", "Failed models and why", ["model", "variant", "error"],
              [[m["name"], str(m.get("variant")), m.get("error") or "(no error recorded)"] for m in failed],
              bold_rows=set(range(len(failed))), empty="none: every model loaded and ran"),
        Table("determinism", "Determinism (identical rung decoded twice, in different batches)",
              ["model / variant", "verdict"], [[k, v] for k, v in sorted((det.get("per_model") or {}).items())],
              note=f"Run verdict: {det['verdict']}. Under deterministic decoding every metric is exactly 0 on the identical rung."
                   + (f" Non-zero: {', '.join(det.get('nonzero_pairs', [])[:10])}." if det.get("nonzero_pairs") else ""),
              empty=det.get("detail") or "no per-model verdicts recorded"),
        Table("audit", "Token audit (pairs kept / total; dropped by reason)",
              ["model", "variant", "rung", "kept", "total", "dropped"],
              [[a["model"], str(a.get("variant", "bf16")), a["rung"], str(a["kept"]), str(a["total"]),
                ", ".join(f"{k}: {v}" for k, v in a["dropped"].items()) or "-"] for a in summary["audit"]],
              empty="no audit rows"),
        Table("exposure", "Tokenizer exposure (share of pairs whose ids still differ after the chat template)",
              ["model", "rung", "edit kind", "pairs", "survived", "share"],
              [[e["model"], e["rung"], e["edit_kind"], str(e["pairs"]), str(e["survived"]), f"{e['share']:.0%}"]
               for e in summary.get("exposure") or []],
              note="An edit a model never sees says nothing about its stability; identical-input and over-context pairs are left out.",
              empty="no perturbed pairs were audited"),
        _cells_table(summary),
        *_cluster_tables(summary),
    ]
    if summary.get("noise_floor"):
        tables.append(noise_floor_table(summary["noise_floor"]))
    checks = summary["checks"]["positive_control_exceeds_noop"]
    tables.append(Table("checks", "Check: positive control moves more than no-op formatting",
                        ["model", "variant", "L", POSITIVE_CONTROL, NEGATIVE_CONTROL, "prompts / pairs (pc; noop)", "holds"],
                        [[c["model"], c["variant"], str(c["length"]), fmt(c[POSITIVE_CONTROL]), fmt(c[NEGATIVE_CONTROL]),
                          "; ".join(f"{n[0]} / {n[1]}" for n in (c.get("n") or {}).values()) or "-",
                          "yes" if c["holds"] else "no"] for c in checks],
                        bold_rows={i for i, c in enumerate(checks) if not c["holds"]},
                        empty="not checked: no model has both rungs scored"))
    unmeasurable = unmeasurable_variants(summary.get("noise_floor") or [])
    if "drift" in summary:
        drift, drift_empty = _drift_rows(summary["drift"])
        tables.append(Table("drift", "Drift from the reference and collapse",
                            ["model", "variant", "L", "reference", "P", "prompts / pairs", "P (reference)",
                             "P − P(ref) [95% CI]", "D", "D − P [95% CI]", "drift prompts / rows", "collapse"],
                            [[r["model"], str(r["variant"]), str(r["length"]), str(r["reference"]),
                              fmt(r["perturbation_distance"]), f"{r.get('n_prompts', '-')} / {r.get('n_pairs', '-')}",
                              fmt(r["reference_perturbation_distance"]), _diff(r.get("delta_p"), r.get("delta_p_ci95")),
                              fmt(r["drift"]), _diff(r.get("d_minus_p"), r.get("d_minus_p_ci95")),
                              f"{r['drift_prompts']} / {r.get('drift_rows', '-')}",
                              _collapse(r["collapse"]) if (r["model"], str(r["variant"])) not in unmeasurable
                              else "unmeasurable: " + unmeasurable[(r["model"], str(r["variant"]))]] for r in drift],
                            note=("P: mean embedding distance over perturbed pairs (identical rung and positive control left out); "
                                  "D: distance between the variant's and the reference's output on the same prompt. "
                                  "CIs resample base prompts. Collapse: P − P(ref) < 0 and D − P > 0, each shown by its "
                                  "95% CI; no collapse: either CI lies wholly on the other side; not determined: a CI "
                                  "straddles 0 (or fewer than two shared prompts)."),
                            bold_rows={i for i, r in enumerate(drift) if r["collapse"] == "collapse"},
                            empty=drift_empty))
    if "tf_drift" in summary:
        tables.append(tf_drift_report_table(summary))
    if "answers" in summary:
        tables += answer_tables(summary)
    tables += variance_report_tables(summary)  # issue 36: variance components; ranking stability (several models)
    if "unresponsive" in summary:
        tables.append(_unresponsive_table(summary["unresponsive"]))
    if "scaffold" in summary:
        tables.append(Table("scaffold", "Scaffolds (outputs that open with a preamble before the answer)",
                            ["model", "variant", "outputs", "with scaffold", "unclosed", "most common opening"],
                            [[s["model"], str(s["variant"]), str(s["outputs"]), f"{s['scaffold_share']:.0%}",
                              f"{s['unclosed_share']:.0%}", f"{s['common_opening_share']:.0%}"] for s in summary["scaffold"]],
                            note="Raw and answer-span distances sit side by side in the distance table.",
                            empty="no scaffold status recorded (no generations, or generations.parquet predates scaffold detection)"))
    if "loops" in summary:
        loops = summary["loops"]
        tables.append(Table("loops", "Repetition loops (share of each output inside a repeating n-gram cycle)",
                            ["model", "variant", "outputs", "mean loop share", "outputs looping"],
                            [[r["model"], str(r["variant"]), str(r["outputs"]), fmt(r["mean_loop_share"]),
                              _pct(r["looping_share"])] for r in loops],
                            note="Looping: at least half of the output's tokens repeat a block of up to 64 tokens three or more times.",
                            empty="no generations"))
    if "engines" in summary:
        tables.append(_engines_table(summary["engines"]))
    flags = summary.get("flags") or []
    tables.append(Table("flags", "Flags (collapse, unresponsive, scaffold, missing answer spans, repetition loops, "
                        "confident-but-unstable, nondeterminism)",
                        ["flag", "model", "variant", "detail"],
                        [[f["flag"], str(f.get("model")), str(f.get("variant")), str(f.get("detail", ""))] for f in flags],
                        bold_rows=set(range(len(flags))), empty="none raised"))
    # Reading order: what to act on (flags, failures), then the findings, then the
    # provenance a sceptical reader checks (determinism, models, audit, exposure).
    order = {k: i for i, k in enumerate(_READING_ORDER)}
    return sorted(tables, key=lambda t: order.get(t.key, len(order)))


_READING_ORDER = ("flags", "failed", "noise_floor", "distances", "answers", "answer_flips", "clusters", "separated", "ranking",
                  "variance", "checks", "drift",
                  "tf_drift", "engines", "unresponsive", "scaffold", "loops",
                  "determinism", "models", "audit", "exposure")


def _table(header: list[str], rows: list[list[str]], bold: set[int] | None = None) -> str:
    bold = bold or set()
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, r in enumerate(rows):
        cells = [md_cell(c) for c in r]
        if i in bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any], manifest: dict[str, Any]) -> str:
    parts = ["# stabprobe report", ""] + [f"- {line}" for line in run_lines(summary, manifest)] + [""]
    for t in report_tables(summary, manifest):
        parts += [f"## {t.title}", ""]
        if t.note:
            parts += [t.note, ""]
        parts += [_table(t.header, t.rows, t.bold_rows) if t.rows else f"_{t.empty}_", ""]
    skipped = manifest.get("config", {}).get("ladder", {}).get("skipped_edits", 0)
    parts += [f"Edits not applicable to their prompt (listed in the manifest): {skipped}.", ""]
    return "\n".join(parts)


def terminal_summary(summary: dict[str, Any]) -> str:
    """Per model x rung: pairs kept, base prompts behind them, and mean embedding distance at each length."""
    lengths = sorted({c["length"] for c in summary["cells"]})
    kept = {(a["model"], a.get("variant", "bf16"), a["rung"]): (a["kept"], a["total"]) for a in summary["audit"]}
    emb = {(c["model"], c["variant"], c["rung"], c["length"]): c["emb_dist"]["mean"] for c in summary["cells"]}
    n_prompts = {(c["model"], c["variant"], c["rung"]): c.get("n_prompts", "-") for c in summary["cells"]}
    models = sorted({(c["model"], c["variant"]) for c in summary["cells"]})
    mw = max([18] + [len(m) + 2 for m, _ in models])
    vw = max([8] + [len(v) + 2 for _, v in models])
    head = f"{'model':<{mw}}{'variant':<{vw}}{'rung':<18}{'kept':>9}{'prompts':>8}" + "".join(f"{'emb@' + str(L):>11}" for L in lengths)
    lines = [head, "-" * len(head)]
    for model, variant in models:
        for rung in RUNGS:
            if (model, variant, rung) not in kept:
                continue
            k, t = kept[(model, variant, rung)]
            vals = "".join(f"{fmt(emb.get((model, variant, rung, L), float('nan'))):>11}" for L in lengths)
            lines.append(f"{model:<{mw}}{variant:<{vw}}{rung:<18}{f'{k}/{t}':>9}{n_prompts.get((model, variant, rung), '-'):>8}{vals}")
    lines += terminal_answers(summary)
    det = summary["determinism"]
    lines.append(f"determinism: {det['verdict']} ({det['nonzero_rows']}/{det['identical_rows']} identical-rung rows non-zero)")
    for f in summary.get("flags") or []:
        lines.append(f"FLAG {f['flag']} {f.get('model')} ({f.get('variant')}): {f.get('detail', '')}")
    for m in summary["models"]:
        if m["status"] != "ok":
            lines.append(f"FAILED {m['name']} ({m['variant']}): {m['error']}")
    # Template and model text reach the terminal here: no control sequence of theirs does.
    return strip_control("\n".join(lines))
