"""Decode = engine + capture: which engine chooses the tokens, and where the per-step readings come from.

An engine is a :class:`Engine` subclass in its own module, declared once by
name in harness.core.engines (which every list of engines reads). ``hf``
(harness.decode.engine_hf): transformers ``generate``, readings captured while
decoding (harness.decode.greedy) or from the teacher-forced probe
(harness.decode.probe). ``vllm`` (harness.decode.vllm_engine): vLLM chooses the
tokens, the probe reads them (vLLM gives ids only). With the probe, every output
records whether the HF model's argmax reproduces the engine's tokens; the tokens
themselves are never changed.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from harness.core.engines import DEFAULT_ENGINE, engine_decl
from harness.decode.greedy import DEFAULT_BATCH_SIZE, Generation, check_trace_head
from harness.decode.records import DecodeRequest, EngineOutput, EngineRun, ProbeInput
from harness.decode.probe import PROBE_VERSION, teacher_forced
from harness.models.loading import LoadedModel
from harness.models.records import ModelInfo

CAPTURES = ("generate", "probe")

Progress = Callable[[int], None] | None


class EngineUnavailable(RuntimeError):
    """An engine is missing or cannot run this model/variant; the message is the one-line reason."""


class Engine(ABC):
    """One decode engine: chooses greedy tokens for a list of requests and says how it ran.

    Subclasses live one per module and are declared by name in harness.core.engines; the
    name is given to the instance by the registry (:func:`get_engine`), never repeated in the class.
    """

    requires: tuple[str, ...] = ()
    """Modules that must import for this engine to run (checked before it decodes)."""
    missing: str = "the {engine} engine needs {module}, which is not installed"
    """The one-line error when one of ``requires`` is missing (``{engine}``, ``{module}`` filled in)."""
    probe_only: bool = False
    """True when the engine returns token ids only, so its readings always come from the probe."""

    def __init__(self, name: str) -> None:
        self.name = name

    def readings(self, capture: str) -> str:
        """Where this engine's per-step readings come from when ``capture`` was asked for."""
        return "probe" if self.probe_only else capture

    def check_installed(self) -> None:
        """Raise :class:`EngineUnavailable` with :attr:`missing` when a required module does not import."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise EngineUnavailable(self.missing.format(engine=self.name, module=exc.name or module)) from None

    def refusal(self, info: ModelInfo) -> str | None:
        """Why this engine cannot decode ``info``'s variant (e.g. bitsandbytes weights on vLLM); None: it can."""
        return None

    @abstractmethod
    def decode(self, loaded: LoadedModel, requests: Sequence[DecodeRequest], max_new_tokens: int,
               lengths: Sequence[int], batch_size: int, progress: Progress, batching: str, capture: str,
               traces: str) -> tuple[list[Generation] | list[EngineOutput], EngineRun]:
        """Every request decoded, and how the engine ran (its manifest record).

        ``capture`` is already :meth:`readings`' answer: ``"generate"`` returns Generations
        with the engine's own readings, ``"probe"`` returns EngineOutputs for the probe to read.
        """

    def shutdown(self) -> None:
        """Release what :meth:`decode` holds (device memory, worker threads); called before the probe loads."""


def get_engine(name: str) -> Engine:
    """A fresh instance of the engine declared as ``name`` (ValueError naming the known engines otherwise)."""
    impl = engine_decl(name).implementation
    if isinstance(impl, str):
        module, _, attr = impl.partition(":")
        impl = getattr(importlib.import_module(module), attr)
    if not (isinstance(impl, type) and issubclass(impl, Engine)):
        raise TypeError(f"engine {name!r}: {impl!r} is not a harness.decode.engines.Engine subclass")
    return impl(name)


def effective_capture(engine_name: str, capture: str) -> str:
    """Where the readings come from: the engine's answer (vLLM returns ids only: always the probe)."""
    return get_engine(engine_name).readings(capture)


def probe_generations(loaded: LoadedModel, outputs: Sequence[EngineOutput], lengths: Sequence[int], engine_name: str,
                      progress: Progress = None) -> list[Generation]:
    """Generation records whose per-step readings are the probe's, one teacher-forced forward per output."""
    tok, info = loaded.tokenizer, loaded.info

    def check(head, h0, logits0):
        # Once per cell, as for generate: the closed-form head against the logits the probe took its argmax over.
        return check_trace_head(loaded, head, h0, logits0) if loaded.head_check is None else head

    gens = []
    for o in outputs:
        head = loaded.stability_head()  # None after a failed check: the rest of the cell's traces stay nan
        r = teacher_forced(loaded.model, ProbeInput(tuple(o.request.token_ids), o.tokens), lengths, head, check)
        a = r.agreement
        gen_ids = o.gen_ids
        gens.append(Generation(
            model=info.name, variant=info.variant, prompt_key=o.request.prompt_key, replicate=o.request.replicate,
            rendered_text=o.request.rendered_text, n_prompt_tokens=len(o.request.token_ids), gen_ids=gen_ids,
            gen_text=tok.decode(list(gen_ids), skip_special_tokens=False), stop_reason=o.stop_reason,
            trace_top1_id=r.top1_id, trace_top1_logit=r.top1_logit, trace_top2_id=r.top2_id, trace_top2_logit=r.top2_logit,
            prompt_end_logprobs=r.prompt_end_logprobs, hidden_means=r.hidden_means, trace_delta_tcb=r.delta_tcb,
            trace_flip_radius=r.flip_radius, trace_flip_rival=r.flip_rival, trace_head_top1_id=r.head_top1_id,
            trace_steps=tuple(range(len(r.top1_id))), engine=engine_name, capture="probe",  # the probe evaluates every step
            probe_agreement=a.share, probe_first_disagreement=a.first_disagreement,
            probe_margin_at_disagreement=a.margin_at_disagreement, probe_engine_token=a.engine_token,
            probe_token=a.probe_token,
        ))
        if progress:
            progress(1)
    return gens


def decode_with_engine(loaded: LoadedModel, requests: Sequence[DecodeRequest], max_new_tokens: int,
                       lengths: Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = None,
                       batching: str = "rows", engine: str = DEFAULT_ENGINE,
                       capture: str = "generate", traces: str = "all") -> tuple[list[Generation], EngineRun]:
    """Every request decoded by ``engine``, read by ``capture``; returns the records and how the engine ran.

    ``traces``: passed to :func:`~harness.decode.greedy.decode_all` for the generate capture (``"deferred"``:
    filled later at the steps read, harness.decode.traces); the probe evaluates every step.
    """
    if capture not in CAPTURES:
        raise ValueError(f"unknown capture {capture!r} (expected one of {', '.join(CAPTURES)})")
    eng = get_engine(engine)
    capture = eng.readings(capture)
    eng.check_installed()
    reason = eng.refusal(loaded.info)
    if reason is not None:
        raise EngineUnavailable(reason)
    try:
        items, run = eng.decode(loaded, requests, max_new_tokens, lengths, batch_size,
                                progress if capture == "generate" else None, batching, capture, traces)
    finally:
        eng.shutdown()  # before the probe loads the HF model: the two never hold device memory at once
    if capture == "generate":
        return list(items), run
    return probe_generations(loaded, items, lengths, engine, progress), run


def agreement_summary(gens: Sequence[Generation]) -> dict:
    """Per cell, for the manifest: how many probed outputs the probe reproduced step for step."""
    probed = [g for g in gens if g.capture == "probe"]
    if not probed:
        return {"probed_outputs": 0}
    share = np.array([g.probe_agreement for g in probed], dtype=np.float64)
    steps = np.array([len(g.trace_top1_id) for g in probed])
    return {
        "probe_version": PROBE_VERSION,
        "probed_outputs": len(probed),
        "outputs_fully_agreeing": int((share == 1.0).sum()),
        "steps": int(steps.sum()),
        "agreeing_steps": int(np.rint(share * steps).sum()),
        "first_disagreements": [dataclasses.asdict(_Disagreement(g.prompt_key, g.replicate, g.probe_first_disagreement,
                                                                 g.probe_margin_at_disagreement))
                                for g in probed if g.probe_first_disagreement >= 0][:20],
    }


@dataclasses.dataclass(frozen=True)
class _Disagreement:
    prompt_key: str
    replicate: int
    step: int
    margin: float
