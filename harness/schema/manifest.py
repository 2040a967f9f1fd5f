"""manifest.json: everything a run's results depend on, and how the run ended.

Written by harness.run.pipeline (built from harness.run.manifest.base_manifest, then evolved stage by
stage), rewritten by --resume and merge (harness.run.resume); read back by harness.core.rundir_read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from harness.schema.base import SCHEMA_VERSION, Record
from harness.schema.cell import CellRecord
from harness.schema.run_config import RunConfigRecord

RunStatus = Literal["running", "complete", "partial", "empty", "interrupted", "crashed"]
"""complete only when every cell of the whole plan finished with results; partial: a shard alone."""


class HarnessRecord(Record):
    """The harness that wrote the run."""

    name: StrictStr = Field(description="Always stabprobe.")
    version: StrictStr = Field(description="Package version.")
    commit: StrictStr | None = Field(description="git commit of the checkout (None: not a git checkout).")
    dirty: StrictBool | None = Field(description="The checkout had uncommitted changes to tracked files.")


class DeviceRecord(Record):
    """The machine (harness.run.manifest.device_info)."""

    platform: StrictStr = Field(description="platform.platform().")
    processor: StrictStr = Field(description="Processor or machine name.")
    cpu_count: StrictInt | None = Field(description="os.cpu_count().")
    torch_threads: StrictInt = Field(description="torch.get_num_threads() when the manifest was made.")
    cuda_available: StrictBool = Field(description="torch.cuda.is_available().")
    kernels: dict[str, StrictStr] = Field(description="Compute routes the numbers depend on (GEMM, Levenshtein).")
    cuda_device: StrictStr | None = Field(None, description="GPU name (only when CUDA is available).")
    cuda_version: StrictStr | None = Field(None, description="CUDA version of torch (only when CUDA is available).")


class DeterminismFlags(Record):
    """The determinism settings in force (the identical rung, not these flags, decides the verdict)."""

    torch_deterministic_algorithms: StrictBool = Field(description="torch.are_deterministic_algorithms_enabled().")
    cudnn_deterministic: StrictBool = Field(description="torch.backends.cudnn.deterministic.")
    cudnn_benchmark: StrictBool = Field(description="torch.backends.cudnn.benchmark.")
    cublas_workspace_config: StrictStr | None = Field(description="$CUBLAS_WORKSPACE_CONFIG.")
    do_sample: StrictBool = Field(description="Always false: greedy decoding.")
    identical_rung_replicates: StrictStr = Field(description="How the identical rung's second side is decoded.")


class ResumeRecord(Record):
    """One `stabprobe run --resume` of this run directory."""

    argv: list[StrictStr] = Field(description="Its command line.")
    libraries: dict[str, StrictStr | None] = Field(description="Library versions of the resuming process.")
    device: DeviceRecord = Field(description="Machine of the resuming process.")


class Manifest(Record):
    """manifest.json."""

    schema_version: StrictInt = Field(SCHEMA_VERSION, description="Schema version of what the run saves.")
    harness: HarnessRecord = Field(description="Name, version and git state of the harness that wrote the run.")
    command: StrictStr = Field(description="run, gate or merge.")
    argv: list[StrictStr] = Field(description="Command line.")
    status: RunStatus = Field(description="How the run stands or ended.")
    config: RunConfigRecord = Field(description="The resolved configuration.")
    libraries: dict[str, StrictStr | None] = Field(description="Library versions (None: not installed).")
    device: DeviceRecord = Field(description="The machine.")
    determinism_flags: DeterminismFlags = Field(description="Determinism settings in force.")
    models: list[CellRecord] = Field(description="Every finished cell's record, in plan order.")
    resumed: list[ResumeRecord] | None = Field(None, description="Each --resume of this directory.")
    merged_from: list[StrictStr] | None = Field(None, description="Shard directories a merge joined.")
    error: StrictStr | None = Field(None, description="Why the run is interrupted, crashed or empty.")
    scorer_version: StrictStr | None = Field(
        None, description="Version of the pair metrics the run scored with (harness.score.registry.scorer_version); "
                          "compare, merge and --resume refuse runs whose scoring inputs differ. None: not recorded.")
    phase_seconds: dict[str, StrictFloat | StrictInt] | None = Field(
        None, description="Seconds of the run's phases: cells, merge (wall), and within the merge "
                          "teacher_forced_drift (wall) and teacher_forced_drift_cpu (the run process's CPU seconds).")
    teacher_forced_drift: dict[str, Any] | None = Field(
        None, description="What the teacher-forced drift read, per variant (harness.run.tf_drift).")
    cells_missing: list[StrictStr] | None = Field(None, description="Cells of the plan without a cell.json.")
    decoded_prompts: StrictInt | None = Field(None, description="Prompts decoded over every cell.")
    cached_prompts: StrictInt | None = Field(None, description="Prompts from the cache over every cell.")
    cache_entries_rejected: StrictInt | None = Field(None, description="Damaged cache entries recomputed.")
    cache_write_failures: StrictInt | None = Field(None, description="Cache writes that failed.")
    cache_write_error: StrictStr | None = Field(None, description="The first failed cache write.")
    determinism: dict[str, Any] | None = Field(
        None, description="The determinism verdict, as summary.json's (computed once, by the summary builder).")
