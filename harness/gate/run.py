"""`stabprobe gate --config gate.yaml`: a CI check that prompt neighbourhoods stay stable.

The config (harness.gate.config) names models and neighbourhoods, each with
upper limits. The gate builds one ladder from all neighbourhoods, runs the
pipeline once, and checks every neighbourhood x model x variant against its
limits on the run's pairs.parquet:

- ``mean_emb_dist``: mean output embedding distance over the perturbed pairs;
- ``flip_rate``: share of perturbed pairs whose prompt-end top-1 token differs;
- ``answer_flip_rate``: share of perturbed pairs whose answer correctness
  differs between the sides (the neighbourhood's ``answer`` and ``check``);
- any other metric registered with a gate use (harness.score.registry.gate_metrics):
  the mean of its column over the perturbed pairs;
- ``early_divergence_share@k``: share of perturbed pairs whose outputs first
  differ within the first k generated tokens (1 <= first_div <= k);
- ``accuracy_drop``: accuracy of the prompts minus accuracy of their
  perturbations, over the perturbed pairs.

Identical pairs never enter these means; they are the noise floor, and with
``relative_to_noise_floor`` the compared value is (metric - the same metric on
the identical pair(s)). A check passes when its value is <= the limit. A check
that cannot be evaluated (model failed, every pair dropped by the audit, a nan)
fails: a gate that measured nothing must not pass.

Before the thresholds, each model x variant's noise floor (harness.gate.floor):
a decode whose identical pairs differ fails the gate unless the file allows
the variant (``allow_unmeasurable``) or leaves it out (``variants``).

Exit codes: 0 every check passed, 1 at least one threshold failed, 5 a model x
variant is nondeterministic or unmeasurable (takes precedence over 1), 2
configuration error (before any run directory exists).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from harness.core import rundir
from harness.errors import EXIT_FAILED_CHECK, EXIT_OK, EXIT_UNMEASURABLE, EnvironmentProblem
from harness.gate.config import JUNIT_NAME, GateConfig, GateNeighbourhood, Thresholds, load_gate_config
from harness.gate.floor import FLOOR_CHECK, floor_checks
from harness.gate.records import FAIL, PASS, GateCheck, GateResult, ModelRun
from harness.core.rundir_read import load_manifest
from harness.ladder.records import NOISE_FLOOR
from harness.report.text import fmt, md_cell
from harness.schema import Manifest
from harness.score.registry import gate_metrics

SUMMARY_MD = "gate-summary.md"
GATE_JSON = "gate.json"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclass(frozen=True)
class _Metric:
    name: str
    limit: float
    per_pair: Callable[[pd.DataFrame], pd.Series]


def _metrics(t: Thresholds) -> list[_Metric]:
    """The checks ``t`` asks for: the registry's gate metrics (the column's mean) in column order, then
    early divergence and accuracy drop (which combine columns)."""
    out = []
    # nan where a metric is undefined on a pair (e.g. answer_flip without an answer span, or a task-changing
    # pair without one): the check fails.
    for column, use in gate_metrics():
        limit = t.limit(use.check)
        if limit is not None:
            out.append(_Metric(use.check, limit, lambda d, c=column: d[c].astype(float)))
    if t.max_early_divergence_share is not None:
        k = t.early_step
        assert k is not None  # the schema requires both together
        # first_div is 1-based and 0 when the prefixes agree: 0 is "never diverged", not "at step 0".
        out.append(_Metric(f"early_divergence_share@{k}", t.max_early_divergence_share,
                           lambda d, k=k: ((d["first_div"] >= 1) & (d["first_div"] <= k)).astype(float)))
    if t.max_accuracy_drop is not None:
        out.append(_Metric("accuracy_drop", t.max_accuracy_drop,
                           lambda d: d["correct_a"].astype(float) - d["correct_b"].astype(float)))
    return out


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def check_neighbourhood(nb: GateNeighbourhood, run: ModelRun, rows: pd.DataFrame) -> list[GateCheck]:
    """Every threshold of one neighbourhood on one model x variant; ``rows`` are its pairs.parquet rows."""
    t = nb.thresholds
    rows = rows[rows["length"] == nb.length]
    perturbed = rows[rows["rung"] != NOISE_FLOOR]
    floor_rows = rows[rows["rung"] == NOISE_FLOOR]
    expected = sum(1 for pid in nb.pair_ids if pid.split("/")[1] != NOISE_FLOOR)
    n = len(perturbed)
    checks = []
    for m in _metrics(t):

        def made(verdict: str, message: str, value=None, metric_value=None, floor=None) -> GateCheck:
            return GateCheck(nb.id, run.model, run.variant, m.name, m.limit, t.relative_to_noise_floor, nb.length,
                             value, metric_value, floor, n, expected, verdict, message)

        if run.status != "ok":
            checks.append(made(FAIL, f"model failed: {run.error or run.status}"))
            continue
        if n == 0:
            checks.append(made(FAIL, f"no perturbed pair was scored: the audit dropped all {expected} (see audit.parquet)"))
            continue
        per_pair = m.per_pair(perturbed)
        if per_pair.isna().any():
            checks.append(made(FAIL, f"{m.name} is undefined (nan) on {int(per_pair.isna().sum())} of {n} pairs"))
            continue
        value = metric_value = _mean(per_pair)
        floor = _mean(m.per_pair(floor_rows)) if len(floor_rows) else None
        if t.relative_to_noise_floor:
            if floor is None or math.isnan(floor):
                checks.append(made(FAIL, "no noise floor: the identical pair was not scored", metric_value=metric_value))
                continue
            value = metric_value - floor
        shown = (f"{m.name} - floor {value:.4f} (= {metric_value:.4f} - {floor:.4f})" if t.relative_to_noise_floor
                 else f"{m.name} {value:.4f}")
        over = f"over {n} pair{'s' if n != 1 else ''}" + (f" ({expected - n} dropped by the audit)" if n < expected else "")
        if value <= m.limit:
            checks.append(made(PASS, f"{shown} <= {m.limit:g} {over}", value, metric_value, floor))
        else:
            checks.append(made(FAIL, f"{shown} > {m.limit:g} {over}; {_largest(perturbed, per_pair)}",
                               value, metric_value, floor))
    return checks


def _largest(perturbed: pd.DataFrame, per_pair: pd.Series, k: int = 3) -> str:
    """The pairs that moved most: where a user starts looking after a breach."""
    top = per_pair[per_pair > 0].sort_values(ascending=False, kind="stable").head(k)
    return "largest: " + ", ".join(f"{perturbed.loc[i, 'pair_id']} ({v:.4g})" for i, v in top.items())


def model_runs(manifest: Manifest, expected: Sequence[str]) -> list[ModelRun]:
    """Each model x variant the manifest recorded; a configured model it lacks becomes a failed run, never a gap."""
    out = []
    for m in manifest.models:
        timings = m.timings_s.to_json_dict()
        out.append(ModelRun(m.name, m.variant, m.status or "unknown", str(m.error or ""),
                            float(sum(v for v in timings.values() if isinstance(v, (int, float)))),
                            str(m.resolved_revision or m.requested_revision or "")))
    seen = {r.model for r in out}
    out += [ModelRun(name, "-", "missing", "not recorded in the run's manifest", 0.0, "") for name in expected
            if name not in seen]
    return out


def evaluate(cfg: GateConfig, pairs: pd.DataFrame, runs: Sequence[ModelRun]) -> list[GateCheck]:
    """Every neighbourhood x model x variant x threshold, in config order."""
    checks: list[GateCheck] = []
    for run in runs:
        mine = pairs[(pairs["model"] == run.model) & (pairs["variant"] == run.variant)]
        for nb in cfg.neighbourhoods:
            checks += check_neighbourhood(nb, run, mine[mine["pair_id"].isin(nb.pair_ids)])
    return checks


# ---------------------------------------------------------------- rendering

def _table_rows(checks: Sequence[GateCheck]) -> list[list[str]]:
    return [[c.neighbourhood, f"{c.model}/{c.variant}", c.metric + (" - floor" if c.relative else ""), fmt(c.value),
             f"{c.threshold:g}", f"{c.n_pairs}/{c.n_expected}", c.verdict.upper()] for c in checks]


HEADER = ["neighbourhood", "model", "metric", "value", "threshold", "pairs", "verdict"]
"""``pairs``: perturbed pairs scored / in the neighbourhood (identical pairs excluded)."""


def _verdict_line(checks: Sequence[GateCheck]) -> str:
    failed = sum(not c.passed for c in checks)
    floor = [f"{c.model}/{c.variant}" for c in checks if c.metric == FLOOR_CHECK and not c.passed]
    if failed:
        return (f"gate: FAIL ({failed} of {len(checks)} checks failed"
                + (f"; nondeterministic or unmeasurable: {', '.join(floor)}" if floor else "") + ")")
    return f"gate: PASS (all {len(checks)} checks passed)"


def terminal_table(checks: Sequence[GateCheck]) -> str:
    rows = _table_rows(checks)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADER)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(HEADER), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    failures = [c for c in checks if not c.passed]
    if failures:
        out.append("")
        out += [f"FAIL {c.neighbourhood} {c.model}/{c.variant} {c.label}: {c.message}" for c in failures]
    out.append(_verdict_line(checks))
    return "\n".join(out)


def markdown_summary(cfg: GateConfig, run_dir: Path, checks: Sequence[GateCheck], determinism: str) -> str:
    failed = [c for c in checks if not c.passed]
    icon = "❌" if failed else "✅"
    lines = [
        f"### {icon} stabprobe {_verdict_line(checks)}",
        "",
        f"Config `{cfg.path}` · run directory `{run_dir}` · determinism: {determinism}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] * len(HEADER)) + "|",
    ]
    lines += ["| " + " | ".join(md_cell(x) for x in r) + " |" for r in _table_rows(checks)]
    if failed:
        lines += ["", "**Failed checks**", ""]
        lines += [f"- `{md_cell(c.neighbourhood)}` on `{c.model}/{c.variant}`, {md_cell(c.label)}: {md_cell(c.message)}"
                  for c in failed]
    lines.append("")
    return "\n".join(lines)


# XML 1.0 cannot carry most control characters, and a model's error text may hold any.
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def junit_xml(cfg: GateConfig, run_dir: Path, runs: Sequence[ModelRun], checks: Sequence[GateCheck],
              timestamp: str) -> str:
    """One testsuite per model/variant, one testcase per neighbourhood x threshold, ``<failure>`` on a breach."""
    root = ET.Element("testsuites", name="stabprobe gate", tests=str(len(checks)),
                      failures=str(sum(not c.passed for c in checks)), errors="0",
                      time=f"{sum(r.seconds for r in runs):.3f}")
    for run in runs:
        mine = [c for c in checks if (c.model, c.variant) == (run.model, run.variant)]
        suite = ET.SubElement(root, "testsuite", name=f"{run.model}/{run.variant}", tests=str(len(mine)),
                              failures=str(sum(not c.passed for c in mine)), errors="0", skipped="0",
                              time=f"{run.seconds:.3f}", timestamp=timestamp, hostname=_x(socket.gethostname()))
        props = ET.SubElement(suite, "properties")
        for name, value in (("config", str(cfg.path)), ("run_dir", str(run_dir)), ("model_status", run.status),
                            ("revision", run.revision)):
            ET.SubElement(props, "property", name=name, value=_x(value))
        for c in mine:
            case = ET.SubElement(suite, "testcase", classname=f"stabprobe.gate.{run.model}/{run.variant}",
                                 name=_x(f"{c.neighbourhood}: {c.label}"), time="0")
            if not c.passed:
                kind = ("model_failed" if run.status != "ok" else "unmeasurable" if c.metric == FLOOR_CHECK
                        else "no_value" if c.value is None else "threshold")
                fail = ET.SubElement(case, "failure", message=_x(c.message), type=kind)
                fail.text = _x("\n".join(f"{k}: {v}" for k, v in asdict(c).items()))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def append_step_summary(markdown: str) -> Path | None:
    """Append to the file GitHub Actions names in $GITHUB_STEP_SUMMARY; None when the variable is unset."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(markdown)
    except OSError as exc:
        # The verdict is already written to the run directory; a CI step that cannot show it must not look green.
        raise EnvironmentProblem(f"${STEP_SUMMARY_ENV}={target}: cannot append the gate summary ({exc.strerror})") from None
    return Path(target)


# ---------------------------------------------------------------- the gate

def run_gate(config_path: Path | str, argv: Sequence[str] = (), *, out: Path | None = None, junit: Path | None = None,
             progress: bool = True, threads: int | None = None) -> GateResult:
    """Validate the config (InputError before any directory exists), run the pipeline once, check every limit.

    ``threads``: the run's torch CPU threads (None: the policy of harness.core.threads, as for `stabprobe run`)."""
    cfg = load_gate_config(config_path, out=out, junit=junit, threads=threads)
    from harness.run.pipeline import RunConfig, run  # torch and transformers: only once the config is known to be good

    result = run(RunConfig(models=cfg.models, ladder=cfg.ladder, out=cfg.out, lengths=cfg.lengths, argv=tuple(argv), command="gate",
                           progress=progress, threads=cfg.threads, variants=cfg.variants))
    run_dir = result.run_dir
    manifest = load_manifest(run_dir)
    runs = model_runs(manifest, [m.name for m in cfg.models])
    pairs = pd.read_parquet(run_dir / rundir.PAIRS)
    floors = floor_checks(pairs, runs, cfg.lengths[0], cfg.allow_unmeasurable)
    checks = tuple(floors + evaluate(cfg, pairs, runs))
    determinism = str((manifest.determinism or {}).get("verdict", "unknown"))
    timestamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    junit_path = cfg.junit if cfg.junit is not None else run_dir / JUNIT_NAME
    exit_code = (EXIT_UNMEASURABLE if any(not c.passed for c in floors)
                 else EXIT_FAILED_CHECK if any(not c.passed for c in checks) else EXIT_OK)
    # The run directory's own records first: if a path outside it fails below, the verdict is still on disk.
    markdown = markdown_summary(cfg, run_dir, checks, determinism)
    rundir.atomic_write_text(run_dir / SUMMARY_MD, markdown)
    rundir.atomic_write_json(run_dir / GATE_JSON, {
        "config": str(cfg.path), "exit_code": exit_code, "junit": str(junit_path), "determinism": determinism,
        "checks": [asdict(c) | {"passed": c.passed} for c in checks],
    })
    try:
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(junit_path, junit_xml(cfg, run_dir, runs, checks, timestamp))
    except OSError as exc:
        raise EnvironmentProblem(f"{junit_path}: cannot write the JUnit file ({exc.strerror})") from None
    append_step_summary(markdown)
    return GateResult(exit_code, run_dir, checks, junit_path, run_dir / SUMMARY_MD, terminal_table(checks))
