"""manifest.json ``config``: the resolved run configuration (harness.run.config.config_record writes it,
config_from_record reads it back for --resume and merge)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from harness.schema.base import Record


class SkippedEdit(Record):
    """An edit the ladder could not apply to a prompt (harness.ladder.records.SkippedEdit)."""

    prompt_id: StrictStr = Field(description="Base prompt the edit was tried on.")
    rung: StrictStr = Field(description="Rung of the edit.")
    edit_kind: StrictStr = Field(description="Edit kind that did not apply.")
    reason: StrictStr = Field(description="Why it did not apply.")


class LadderRecord(Record):
    """The ladder of the run, counted (its exact pairs are in ladder.json)."""

    name: StrictStr = Field(description="Ladder name.")
    source: StrictStr = Field(description="File the ladder was read from.")
    sha256: StrictStr | None = Field(description="sha256 of that file (None: built in memory).")
    prompts: StrictInt = Field(description="Base prompts.")
    pairs: StrictInt = Field(description="Pairs over every rung.")
    rung_counts: dict[str, StrictInt] = Field(description="Pairs per rung, in rung order.")
    skipped_edits: StrictInt = Field(description="Edits that did not apply (len(skipped)).")
    skipped: list[SkippedEdit] = Field(description="Each edit that did not apply, and why.")


class EmbedderRecord(Record):
    """The sentence embedder the distances were computed with (harness.score.records.EmbedderInfo)."""

    name: StrictStr = Field(description="Embedder name.")
    path: StrictStr = Field(description="Directory it was loaded from (what resume and merge load again).")
    sha256: StrictStr = Field(description="sha256 of its weights.")
    max_seq_length: StrictInt = Field(description="Word pieces it reads at once.")
    long_text: StrictStr = Field(description="How longer texts are embedded.")
    window: StrictInt = Field(description="Window length in word pieces (0: no windowing).")
    overlap: StrictInt = Field(description="Overlap of consecutive windows in word pieces.")
    threads: StrictInt = Field(description="Torch threads the embedding computes with.")


class RunConfigRecord(Record):
    """What a run was asked to do, resolved: enough to rebuild its RunConfig (with ladder.json)."""

    models: list[dict[str, Any]] = Field(
        description="Each model's registry entry as resolved (harness.models.registry.ModelEntry.model_dump); "
                    "validated by ModelEntry when read back, since the models package owns its shape.")
    ladder: LadderRecord = Field(description="The ladder, counted.")
    lengths: list[StrictInt] = Field(description="Scored output lengths in tokens.")
    max_new_tokens: StrictInt = Field(description="Tokens decoded per prompt: the longest length.")
    variants: dict[str, list[StrictStr]] = Field(description="Per model, its variants spelled with their engine.")
    cells: list[StrictStr] = Field(description="<model>--<variant> of every cell, in plan order.")
    shard: StrictStr | None = Field(description="'i/n' when only a shard of the cells runs; None: all.")
    executor: StrictStr = Field(description="local or ray.")
    workers: StrictInt | None = Field(
        None, description="Decode workers per cell (--workers; harness.run.workers): the count asked for, or the "
                          "default resolved (the cores this process may use); unless asked for a count, a cell uses at most "
                          "one per 16 of its requests and one per 2,048 MiB-requests of work (requests x weights; "
                          "cell.json workers.chosen says why). None: a run made before workers existed (one).")
    batch_size: StrictInt = Field(description="Prompts per decode batch.")
    batching: StrictStr = Field(description="rows, bucket or padded (harness.decode.greedy).")
    decoder_version: StrictStr = Field(description="Version of the decoder's outputs (part of the decode key).")
    engine: StrictStr | None = Field(description="Engine asked for on the command line; None: each model's own.")
    capture: StrictStr = Field(description="Where the per-step readings come from: generate or probe.")
    store_full_dist: StrictBool = Field(description="generations.parquet keeps the full prompt-end rows.")
    twin: StrictBool = Field(False, description="The teacher-forced twin divergence was computed (--twin; "
                                                "harness.run.twin); False: its pairs.parquet columns are NaN.")
    cache_dir: StrictStr | None = Field(description="Memo store directory; None: no cache.")
    embedder: EmbedderRecord = Field(description="The sentence embedder.")
