"""cells/<model>--<variant>/cell.json: one cell's record (also manifest ``models[]``).

A failed or empty cell stops part way, so most fields are optional: a field is written only when the cell
got that far (harness.schema.base.Record.to_json_dict), as before the schema existed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from harness.schema.base import SCHEMA_VERSION, OpenRecord, Record

CellStatus = Literal["ok", "failed", "failed-numerics", "empty"]
"""ok: scored; failed: an error (``error``); failed-numerics: NaN/inf outputs (``numerics``); empty: the
audit dropped every pair."""

Seconds = StrictFloat | StrictInt


class CellTimings(Record):
    """Seconds of each phase of the cell (a phase the cell did not reach is absent)."""

    load: Seconds | None = Field(None, description="Loading the model (lazy: tokenizer and config only).")
    audit: Seconds | None = Field(None, description="Rendering and auditing the pairs.")
    decode: Seconds | None = Field(None, description="Decoding, cache look-ups and completion of the traces.")
    load_weights: Seconds | None = Field(None, description="Loading the weights (0 when every prompt was cached).")
    load_embedder: Seconds | None = Field(None, description="Loading the sentence embedder (first cell only).")
    score: Seconds | None = Field(None, description="Embedding and scoring the pairs.")
    twin: Seconds | None = Field(None, description="The teacher-forced twin passes and their reduction (harness.run.twin).")


class Numerics(Record):
    """Where a cell's outputs first went non-finite (harness.decode.greedy.NonFiniteOutput)."""

    what: StrictStr = Field(description="Which reading was non-finite (logits, prompt end, hidden states).")
    step: StrictInt = Field(description="First non-finite decode step.")
    prompt: StrictStr = Field(description="Human name of the prompt (prompt id, pair id, side).")
    replicate: StrictInt = Field(description="Replicate of the decode (1: the identical rung's second side).")


class HeadTop1(Record):
    """Steps whose closed-form head top-1 differs from greedy's."""

    steps: StrictInt = Field(description="Steps where the head was evaluated.")
    disagree: StrictInt = Field(description="Of those, steps whose head top-1 is not greedy's token.")


class EngineRecord(OpenRecord):
    """How the tokens were chosen (harness.decode.records.EngineRun); its inner keys belong to the decode stage."""

    engine: StrictStr = Field(description="Engine name (hf, vllm).")
    version: StrictStr = Field(description="Engine library and version.")


class CellRecord(Record):
    """One cell = one model x variant: what it loaded, decoded, scored, and how it ended."""

    schema_version: StrictInt = Field(SCHEMA_VERSION, description="Schema version of this record.")
    name: StrictStr = Field(description="Model name (registry).")
    variant: StrictStr = Field(description="Variant, spelled with its engine (harness.models.variants).")
    source: StrictStr = Field(description="Where the model comes from (hub id or directory).")
    requested_revision: StrictStr | None = Field(description="Revision the registry asks for.")
    timings_s: CellTimings = Field(description="Seconds per phase.")
    # --- what was loaded (harness.models.records.ModelInfo), present once the model loaded
    resolved_revision: StrictStr | None = Field(None, description="Revision actually loaded.")
    weights_sha256: StrictStr | None = Field(None, description="sha256 of the weight files.")
    tokenizer_sha256: StrictStr | None = Field(None, description="sha256 of the tokenizer files.")
    chat_template_sha256: StrictStr | None = Field(None, description="sha256 of the chat template applied.")
    chat_template_policy: StrictStr | None = Field(None, description="Template policy (model, none, file).")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="Keyword arguments of the template.")
    template_date: StrictStr | None = Field(None, description="Date given to templates that read the clock.")
    dtype: StrictStr | None = Field(None, description="Weight dtype.")
    quantization: StrictStr | None = Field(None, description="Quantization (None: none).")
    attn_implementation: StrictStr | None = Field(None, description="Attention implementation.")
    trust_remote_code: StrictBool | None = Field(None, description="Remote code was allowed.")
    architecture: StrictStr | None = Field(None, description="Model class.")
    num_parameters: StrictInt | None = Field(None, description="Parameters.")
    context_length: StrictInt | None = Field(None, description="Context window in tokens (None: unknown).")
    eos_token_ids: list[StrictInt] | None = Field(None, description="Token ids that end a generation.")
    pad_token_id: StrictInt | None = Field(None, description="Padding token id.")
    pad_token_note: StrictStr | None = Field(None, description="Where the pad token came from.")
    load_seconds: Seconds | None = Field(None, description="Seconds to load (as timings_s.load).")
    chat_template_source: StrictStr | None = Field(None, description="Where the chat template came from.")
    conversion: dict[str, Any] | None = Field(
        None, description="A GGUF source's conversion (harness.models.gguf): GGUF sha256 and origin, libraries, dtype, "
                          "converted revision, seconds, whether this load converted; None for other sources.")
    template_reads_clock: StrictBool | None = Field(None, description="The template writes today's date.")
    # --- the decode
    engine_name: StrictStr | None = Field(None, description="Engine that chose the tokens.")
    capture: StrictStr | None = Field(None, description="Where per-step readings come from: generate or probe.")
    decode_completion: dict[str, StrictInt] | None = Field(
        None, description="Counts of the trace completion (harness.run.complete).")
    engine: EngineRecord | None = Field(None, description="The engine run; None when every prompt came from the cache.")
    probe: dict[str, Any] | None = Field(
        None, description="Agreement of the teacher-forced probe with the engine's tokens (harness.decode.engines).")
    weights_loaded: StrictBool | None = Field(None, description="False when every prompt came from the cache.")
    stability_traces: StrictStr | None = Field(None, description="How the closed-form traces were computed, or why not.")
    trace_head_check: dict[str, Any] | None = Field(
        None, description="The closed-form head checked against the model's logits (None: not checked).")
    trace_head_top1_disagreements: HeadTop1 | None = Field(None, description="Head top-1 against greedy's.")
    cache_key: StrictStr | None = Field(None, description="Decode cache key (harness.run.keys.cell_key).")
    workers: dict[str, Any] | None = Field(
        None, description="Decode workers of this cell (harness.run.parallel): count, pool (local or ray), "
                          "startup_seconds (the pool's start as this cell saw it: time waited for it, and for a local pool "
                          "the time its decode ran short of a worker still starting or binding; 0 when ready), "
                          "bind_seconds (time waited for every worker to load this cell's model: 0 for a local pool, "
                          "whose workers bind while the others decode), rss_mib "
                          "(each worker's peak RSS, VmHWM), cpu_seconds (each worker's CPU time on this cell after its bind: "
                          "how evenly the split shared the work, whatever the machine's load; worker 0 runs on a "
                          "thread of the cell's process when it runs one torch thread: its thread's CPU time), chosen "
                          "(with the default count: how many the cell's work was worth and why, "
                          "harness.run.worker_memory.workers_for; a cell it gave one has only count and chosen); "
                          "None: one, in the cell's process, as asked (or the run's default was one).")
    results_from_cache: StrictBool | None = Field(None, description="The scored tables came from the cache.")
    decoded_prompts: StrictInt | None = Field(None, description="Prompts decoded in this cell.")
    cached_prompts: StrictInt | None = Field(None, description="Prompts whose decode came from the cache.")
    generated_tokens: StrictInt | None = Field(None, description="Tokens over every generation of the cell.")
    twin: StrictStr | None = Field(
        None, description="The teacher-forced twin divergence (harness.run.twin): 'ok: N pairs, ...' or why its "
                          "columns are NaN (an engine other than HF).")
    # --- the scoring
    embedded_texts: StrictInt | None = Field(None, description="Texts embedded.")
    embedder_windowed_texts: StrictInt | None = Field(None, description="Of those, texts embedded as windows.")
    embedder_long_text: StrictStr | None = Field(None, description="How long texts were embedded.")
    results_key: StrictStr | None = Field(None, description="Scored-tables cache key (harness.run.keys.results_key).")
    # --- how it ended
    status: CellStatus | None = Field(None, description="How the cell ended (None only while it runs).")
    error: StrictStr | None = Field(None, description="One line: why the cell failed or is empty.")
    traceback: StrictStr | None = Field(None, description="Last frames of a failure.")
    numerics: Numerics | None = Field(None, description="Where outputs went non-finite (failed-numerics).")
    cache_entries_rejected: StrictInt | None = Field(None, description="Damaged cache entries recomputed.")
    cache_write_failures: StrictInt | None = Field(None, description="Cache writes that failed.")
    cache_write_error: StrictStr | None = Field(None, description="The first failed cache write.")
    third_party_warnings: dict[str, StrictInt] | None = Field(
        None, description="Third-party warnings and log records during the cell (each shown once, harness.core.noise):"
                          " 'logger or category: message' -> how many times it was raised.")
