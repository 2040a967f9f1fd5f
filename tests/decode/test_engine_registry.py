"""Engines as plug-ins: declared once (harness.core.engines), and every list of engines follows the declarations.

A test engine that wraps the HF one is declared here, at run time, without touching any other file: it then
parses in variant names, validates in a registry entry, is a choice of ``--engine``, enters the decode cache
key, and decodes a real request end to end.
"""

import numpy as np
import pytest

from harness.cli import build_parser, main
from harness.core.engines import EngineDecl, declare_engine, engine_names, withdraw_engine
from harness.decode.engine_hf import HfEngine
from harness.decode.engines import (EngineUnavailable, decode_with_engine, effective_capture, get_engine)
from harness.decode.greedy import DecodeRequest, prompt_key
from harness.decode.vllm_engine import VllmEngine
from harness.errors import InputError
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, ModelEntry, load_registry
from harness.models.variants import engine_of, is_valid_variant, parse_variant, with_engine
from harness.run.keys import cell_key
from harness.schema.cell import CellRecord, CellTimings
from harness.schema.manifest import DeviceRecord
from harness.audit.render import render_prompt
from tests.conftest import write


class FakeEngine(HfEngine):
    """The HF engine under another name: what a third engine's module looks like, minus the library."""

    requires = ("harness",)


@pytest.fixture
def fake():
    declare_engine(EngineDecl("fake", FakeEngine, "test engine wrapping hf", "fake-lib", ("fake-lib",)))
    try:
        yield "fake"
    finally:
        withdraw_engine("fake")
    assert "fake" not in engine_names()


@pytest.fixture(scope="module")
def tiny_chat():
    return load_model(load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"])


def test_the_registry_lists_hf_and_vllm():
    assert engine_names() == ("hf", "vllm", "llamacpp")
    hf, vllm = get_engine("hf"), get_engine("vllm")
    assert isinstance(hf, HfEngine) and isinstance(vllm, VllmEngine) and (hf.name, vllm.name) == ("hf", "vllm")
    assert (effective_capture("hf", "generate"), effective_capture("hf", "probe")) == ("generate", "probe")
    assert effective_capture("vllm", "generate") == "probe"  # vLLM returns ids only


def test_vllm_refuses_bitsandbytes_weights(tiny_chat):
    import dataclasses

    info = dataclasses.replace(tiny_chat.info, variant="int8@vllm", quantization="bitsandbytes-int8")
    assert "not int8@vllm (bitsandbytes-int8)" in get_engine("vllm").refusal(info)
    assert get_engine("vllm").refusal(tiny_chat.info) is None and get_engine("hf").refusal(info) is None


def test_a_declared_engine_appears_everywhere(fake, tiny_chat):
    assert engine_names() == ("hf", "vllm", "llamacpp", "fake")
    # variant parsing
    assert parse_variant("bf16@fake").engine == "fake" and is_valid_variant("int4-nothink@fake")
    assert (with_engine("bf16", "fake"), engine_of("bf16@fake")) == ("bf16@fake", "fake")
    # registry validation
    assert ModelEntry(name="x", source="./x", engine="fake").engine == "fake"
    # the CLI's --engine choices
    assert build_parser().parse_args(["run", "--engine", "fake"]).engine == "fake"
    # the decode cache key: the engine's name, and its library's version
    info = CellRecord(name="x", variant="bf16@fake", source="./x", requested_revision=None, timings_s=CellTimings(),
                      engine_name="fake", capture="generate")
    dev = DeviceRecord(platform="linux", processor="x86_64", cpu_count=2, torch_threads=1, cuda_available=False,
                       kernels={})
    keys = {cell_key(info, [8], "4", "rows", {"fake-lib": v}, dev) for v in ("1.0", "1.1")}
    hf = info.evolve(engine_name="hf")
    assert len(keys) == 2 and cell_key(hf, [8], "4", "rows", {"fake-lib": "1.0"}, dev) not in keys


def test_a_declared_engine_decodes_and_records_its_name(fake, tiny_chat):
    r = render_prompt(tiny_chat.tokenizer, "Reverse the word apple.", tiny_chat.policy)
    reqs = [DecodeRequest(prompt_key(r.token_ids), r.token_ids, 0, r.text)]
    mine, run = decode_with_engine(tiny_chat, reqs, 8, [8], engine="fake", capture="probe")
    ref, ref_run = decode_with_engine(tiny_chat, reqs, 8, [8], engine="hf", capture="probe")
    assert (run.engine, ref_run.engine, mine[0].engine, mine[0].capture) == ("fake", "hf", "fake", "probe")
    assert mine[0].gen_ids == ref[0].gen_ids and mine[0].probe_agreement == 1.0
    assert np.array_equal(mine[0].trace_top1_logit, ref[0].trace_top1_logit)


def test_a_missing_requirement_is_one_line(fake, tiny_chat, monkeypatch):
    monkeypatch.setattr(FakeEngine, "requires", ("no_such_module_stabprobe",))
    with pytest.raises(EngineUnavailable, match=r"^the fake engine needs no_such_module_stabprobe, which is not installed$"):
        decode_with_engine(tiny_chat, [], 8, [8], engine="fake")


def test_unknown_engine_names_the_declared_ones(tiny_chat, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown engine 'tgi' \(expected one of hf, vllm, llamacpp\)"):
        decode_with_engine(tiny_chat, [], 8, [8], engine="tgi")
    with pytest.raises(ValueError, match="unknown variant 'bf16@tgi'.*@hf\\|@vllm"):
        parse_variant("bf16@tgi")
    reg = write(tmp_path / "r.yaml", "models:\n  - name: x\n    source: ./x\n    engine: tgi\n")
    with pytest.raises(InputError) as exc:
        load_registry(reg)
    line = exc.value.one_line()
    assert "models[0]" in line and "engine" in line and "expected one of hf, vllm" in line and "\n" not in line
    with pytest.raises(SystemExit) as done:
        main(["run", "--engine", "tgi"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--engine" in err and len(err.strip().splitlines()) == 1


def test_a_name_is_declared_once():
    with pytest.raises(ValueError, match="already declared"):
        declare_engine(EngineDecl("hf", HfEngine, "again", "transformers", ("transformers",)))
    with pytest.raises(ValueError, match="lowercase identifier"):
        declare_engine(EngineDecl("Bad-Name", HfEngine, "", "x", ()))
    declare_engine(EngineDecl("notanengine", dict, "", "x", ()))
    try:
        with pytest.raises(TypeError, match="not a harness.decode.engines.Engine subclass"):
            get_engine("notanengine")
    finally:
        withdraw_engine("notanengine")
