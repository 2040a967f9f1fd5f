"""Batch-invariant linear layers (harness.decode.invariant): the probe, the fixed-row chunking, and the decode using it.

Real kernels: whether this machine's bf16 matrix kernels round by batch size is
what the probe measures, so the test that needs a variant kernel (an AMX Xeon,
K = 1,024) skips where the kernels are invariant and says so.
"""

from __future__ import annotations

import pytest
import torch

from harness.decode.engine_hf import hf_engine_run
from harness.decode.greedy import decode_all
from harness.decode.invariant import CHUNK_ROWS, fixed_row_linears, probe_linear_invariance
from harness.decode.records import LinearInvariance
from harness.models.loading import load_model
from harness.models.registry import DEFAULT_REGISTRY, load_registry

from tests.decode.test_rows import PROMPTS, _requests, _same

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FORCED = LinearInvariance(False, 1, ("forced by the test",), CHUNK_ROWS)


def _layer(k: int, n: int, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(k, n, bias=bias).to(torch.bfloat16)


def test_chunked_linear_gives_each_row_the_same_bits_whatever_the_batch():
    """Under the chunking a row's output is the same at every batch size: checked on the shape where this machine's
    kernels are most likely to vary (K = 1,024), and on 3-d inputs (batch x tokens x hidden)."""
    layer = _layer(1024, 3072)
    x = torch.randn(150, 1024, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.inference_mode(), fixed_row_linears(layer, FORCED):
        full = layer(x)
        for rows in (1, 2, 17, 37, 48, 49, 100):
            assert torch.equal(layer(x[:rows]), full[:rows]), rows
        assert torch.equal(layer(x[:120].reshape(4, 30, 1024)), full[:120].reshape(4, 30, 3072))
    assert "forward" not in layer.__dict__  # the class's forward is back


def test_probe_finds_what_the_kernels_do():
    """The probe's verdict agrees with a direct comparison over batch sizes, and without the chunking a variant shape
    really rounds by batch size (skipped on machines whose kernels do not)."""
    layer = _layer(1024, 3072)
    verdict = probe_linear_invariance(torch.nn.Sequential(layer))
    assert verdict.shapes_probed == 1
    x = torch.randn(160, 1024, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with torch.inference_mode():
        full = layer(x)
        varies = any(not torch.equal(layer(x[:m]), full[:m]) for m in (2, 3, 17, 33, 37, 48, 64, 100))
    assert verdict.invariant == (not varies)  # the kernel choice depends on the shape, not on the values
    if verdict.invariant:
        assert verdict.chunk_rows is None and verdict.variant_shapes == ()
        pytest.skip("this machine's bf16 kernels are batch-invariant at K = 1,024 (no AMX): nothing to chunk")
    assert verdict.chunk_rows == CHUNK_ROWS and verdict.variant_shapes == ("1024x3072 bfloat16",)
    assert "not batch-invariant" in verdict.note()


def test_small_layers_are_invariant_and_left_alone():
    model = torch.nn.Sequential(_layer(64, 128), _layer(128, 64, bias=False))
    verdict = probe_linear_invariance(model)
    assert verdict.invariant and verdict.shapes_probed == 2 and verdict.chunk_rows is None
    with fixed_row_linears(model, verdict):
        assert all("forward" not in m.__dict__ for m in model)


def test_forward_is_restored_after_an_error():
    layer = _layer(64, 32)
    with pytest.raises(RuntimeError, match="boom"), fixed_row_linears(layer, FORCED):
        assert "forward" in layer.__dict__
        raise RuntimeError("boom")
    assert "forward" not in layer.__dict__


def test_decode_with_chunked_linears_is_bitwise_the_plain_decode_where_kernels_are_invariant():
    """On the demo model (hidden 64: invariant kernels) forcing the chunking changes no bit of any output, so the
    chunking only changes how a product is split; the engine record says which way the decode ran."""
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    plain, forced = load_model(entry), load_model(entry)
    reqs = _requests(plain, PROMPTS) + _requests(plain, PROMPTS[:2], replicate=1)
    ref = decode_all(plain, reqs, 24, [24], batch_size=5, traces="deferred")
    assert plain.linear_invariance.invariant and plain.linear_invariance.chunk_rows is None
    forced.linear_invariance = FORCED
    got = decode_all(forced, reqs, 24, [24], batch_size=5, traces="deferred")
    by = {(g.prompt_key, g.replicate): g for g in ref}
    assert all(_same(by[(g.prompt_key, g.replicate)], g) == [] for g in got)
    assert all("forward" not in m.__dict__ for m in forced.model.modules())
    run = hf_engine_run(forced, 1.0, 10, "rows")
    assert run.args["linear_chunk_rows"] == CHUNK_ROWS and "fixed chunks of 48 rows" in run.batch_invariant_note
    assert hf_engine_run(plain, 1.0, 10, "rows").args["linear_chunk_rows"] is None


def test_quantized_layers_are_probed_or_said_not_probed():
    """bitsandbytes int8 (a subclass of nn.Linear) used to be skipped, so a run on it claimed invariance it never
    measured (issue 30). Now its layers are probed through their own forward; a layer that refuses a bare call is
    recorded as not probed, and either way nothing un-measured is claimed."""
    entry = load_registry(DEFAULT_REGISTRY).by_name()["tiny-chat"]
    q = load_model(entry, variant="int8")
    verdict = probe_linear_invariance(q.model)
    kinds = {type(m).__name__ for m in q.model.modules() if hasattr(m, "in_features")} - {"Linear"}
    assert kinds, "the int8 variant has quantized layers"
    assert verdict.variant_layers or verdict.not_probed or verdict.invariant
    named = " ".join(verdict.variant_layers + verdict.not_probed)
    assert verdict.invariant or any(k in named for k in kinds)
    q.linear_invariance = verdict
    run = hf_engine_run(q, 1.0, 10, "rows")
    assert run.batch_invariant == verdict.covered

    class Refuses(torch.nn.Module):
        in_features, out_features = 8, 8

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(8, 8))

        def forward(self, x):
            raise RuntimeError("needs a GPU")

    v = probe_linear_invariance(torch.nn.Sequential(_layer(8, 8), Refuses()))
    assert not v.invariant and not v.covered and v.not_probed == ("Refuses: RuntimeError: needs a GPU",)
    assert "not probed: Refuses" in v.note()
