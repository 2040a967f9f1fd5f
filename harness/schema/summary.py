"""summary.json: the run's aggregates (built by harness.summary.build.build_summary, written by
harness.report.write.write_reports).

Every top-level key is declared and validated; the rows of the large tables are typed progressively
(a section typed as ``list[dict]`` is checked to be a list of objects, its rows' keys are the builder's).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictInt, StrictStr

from harness.schema.base import SCHEMA_VERSION, OpenRecord, Record

Rows = list[dict[str, Any]]


class SummaryRun(Record):
    """Which run the summary is of (from the manifest)."""

    status: StrictStr | None = Field(description="The manifest's status when the summary was built.")
    command: StrictStr | None = Field(description="The manifest's command.")
    ladder: StrictStr | None = Field(description="Ladder name.")


class SummaryModel(Record):
    """One cell's outcome (from the manifest's models)."""

    name: StrictStr = Field(description="Model name.")
    variant: StrictStr | None = Field(description="Variant.")
    status: StrictStr = Field(description="Cell status (ok, failed, failed-numerics, empty).")
    error: StrictStr | None = Field(description="Why it failed, if it did.")


class Determinism(OpenRecord):
    """The determinism verdict from the identical rung (harness.summary.determinism)."""

    verdict: StrictStr = Field(description="deterministic, nondeterministic or not determined.")


class Bootstrap(Record):
    """How the confidence intervals were computed."""

    resamples: StrictInt = Field(description="Bootstrap resamples.")
    seed: StrictInt = Field(description="Seed of the resampling.")
    unit: StrictStr = Field(description="What is resampled (base prompts).")
    statistic: StrictStr = Field(description="What each resample computes.")
    method: StrictStr = Field(description="Interval method.")


class Checks(Record):
    """Sanity checks over the cells."""

    positive_control_exceeds_noop: Rows = Field(
        description="Per model x variant x length: the positive control moves the output more than noop_format.")


class Summary(Record):
    """summary.json."""

    schema_version: StrictInt = Field(SCHEMA_VERSION, description="Schema version of what the run saves.")
    run: SummaryRun = Field(description="Which run.")
    determinism: Determinism = Field(description="Determinism verdict (copied into the manifest).")
    models: list[SummaryModel] = Field(description="Each cell's outcome.")
    audit: Rows = Field(description="Audit counts per model x variant x rung (kept, total, dropped by reason).")
    cells: Rows = Field(description="Per model x variant x rung x length: metric means with CIs, n_prompts, "
                                    "n_pairs, spread and answer_missing.")
    checks: Checks = Field(description="Sanity checks.")
    bootstrap: Bootstrap = Field(description="How the CIs were computed.")
    exposure: Rows = Field(description="Tokenizer exposure: per model x rung x edit kind, the share surviving the template.")
    clusters: Rows = Field(description="Per variant x rung x length: models grouped by paired tests (compact letters).")
    tests: dict[str, Any] = Field(description="The test design: kind, unit, correction, family and its size.")
    flags: Rows = Field(description="Flags (scaffold, nondeterminism, collapse, unresponsive, loops, answer_missing).")
    drift: Rows = Field(description="Per variant: drift from the reference against the perturbation distance.")
    tf_drift: Rows = Field(description="Teacher-forced drift per variant.")
    answers: Rows = Field(description="Per rung: accuracy per side, flip rate, PSS, spread, PDR.")
    answer_flips: Rows = Field(description="Dutta flips per variant against its reference.")
    unresponsive: Rows = Field(description="The unresponsive check per model x variant x length.")
    noise_floor: Rows = Field(default_factory=list, description=(
        "Per model x variant x length: the identical rung's distance against the perturbation rungs' and the verdict "
        "exact / noisy / unmeasurable / unknown with its reason (harness.summary.floor)."))
    scaffold: Rows = Field(description="Scaffold shares per model x variant.")
    loops: Rows = Field(description="Repetition loops per model x variant.")
    engines: Rows = Field(description="How each cell's tokens were chosen and read.")
    variance: Rows = Field(default_factory=list, description=(
        "Per outcome (emb_dist, correct_b) x length: variance components of the pairs of the task-keeping "
        "perturbation rungs over base prompt, rung, model, variant and engine (Henderson method III, crossed random "
        "effects) and residual, each with its share and a 95% interval resampling base prompts; factors left out "
        "(one level, or determined by another) with the reason; the identical rung's noise variance and share "
        "(harness.summary.variance)."))
    ranking: Rows = Field(default_factory=list, description=(
        "Per length x rung x measure (accuracy, distance), over the run's model x variants (two or more): the "
        "original and perturbed scores and orders, per two units the probability over base-prompt resamples that "
        "their order is the same (p_same), and Kendall's tau-b with a 95% interval (harness.summary.ranking)."))
