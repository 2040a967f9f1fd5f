"""harness.core.gemm: the oneDNN route for fp32 CPU products agrees with torch's, and is used where it should be."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from harness.core import gemm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_onednn_route_is_active_on_x86_builds_with_mkldnn():
    if platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN route is only expected on x86 builds with mkldnn")
    assert gemm.BACKEND == "onednn"


@pytest.mark.parametrize("shape", [(1024,), (7, 1024), (3, 5, 1024), (300, 1024)])
def test_linear_matches_torch_product(shape):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2000, 1024, generator=g) / 32
    b = torch.randn(2000, generator=g)
    x = torch.randn(*shape, generator=g)
    ref = (x.double() @ W.double().T) + b.double()
    got = gemm.linear(x, W, b)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert float((got.double() - ref).abs().max()) < 1e-4
    # bitwise repeatable: same shapes, same thread count
    assert torch.equal(got, gemm.linear(x, W, b))


def test_matmul_with_transposed_view_and_no_copy_semantics():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(3000, 256, generator=g)
    P = torch.softmax(torch.randn(6, 3000, generator=g), -1)
    ref = P.double() @ W.double()
    got = gemm.matmul(P, W)  # P @ W: the weight is W.T, a non-contiguous view
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < 1e-6


def test_autograd_falls_back_to_torch_and_gradients_are_right():
    W = torch.randn(50, 20, dtype=torch.float32)
    x = torch.randn(4, 20, requires_grad=True)
    gemm.linear(x, W).sum().backward()
    assert torch.allclose(x.grad, W.sum(0).expand(4, 20), atol=1e-5)


def test_other_dtypes_use_torch_exactly():
    W = torch.randn(40, 16, dtype=torch.float64)
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.equal(gemm.linear(x, W), x @ W.T)


def test_route_linears_swaps_every_linear_and_keeps_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Sequential(torch.nn.Linear(64, 8)))
    x = torch.randn(5, 32)
    with torch.no_grad():
        before = net(x)
        keys = list(net.state_dict())
        n = gemm.route_linears(net)
        after = net(x)
    assert n == (2 if gemm.BACKEND == "onednn" else 0)
    assert list(net.state_dict()) == keys
    assert float((before - after).abs().max()) < 1e-5


def test_env_var_forces_torch_route():
    code = "from harness.core import gemm; print(gemm.BACKEND)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "STABPROBE_GEMM": "torch"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"


def test_manifest_device_records_the_kernels():
    from harness.run.manifest import device_info

    kernels = device_info()["kernels"]
    assert kernels["fp32_cpu_gemm"] == gemm.BACKEND
    assert kernels["levenshtein_trajectory"] in ("c", "python")


def test_embedder_routes_minilm_and_agrees_with_plain_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from harness.score.embedder import Embedder

    emb = Embedder()
    texts = ["The capital of France is Paris.", "Paris is France's capital.", "7 + 5 = 12", "a"]
    got = emb.encode(texts)
    routed = sum(isinstance(m, gemm.OneDNNLinear) for m in emb.model.modules())
    plain_model = SentenceTransformer(emb.info.path, device="cpu")
    linears = sum(type(m) is torch.nn.Linear for m in plain_model.modules())
    assert linears >= 36  # 6 layers x (q, k, v, o, up, down), and BERT's pooler
    assert routed == (linears if gemm.BACKEND == "onednn" else 0)
    plain = plain_model.encode(texts, normalize_embeddings=True)
    assert float(abs(got - plain).max()) < 1e-5
    assert (got == emb.encode(texts)).all()


def test_generation_cache_key_depends_on_the_gemm_route():
    from harness.run.keys import cell_key
    from harness.schema.cell import CellRecord, CellTimings
    from harness.schema.manifest import DeviceRecord

    info = CellRecord(name="m", variant="bf16", source="./m", requested_revision=None, timings_s=CellTimings(),
                      resolved_revision="sha256:" + "0" * 64, dtype="bf16", engine_name="hf", capture="generate")

    def device(route):
        return DeviceRecord(platform="linux", processor="x86_64", cpu_count=2, torch_threads=1, cuda_available=False,
                            kernels={"fp32_cpu_gemm": route})

    keys = {cell_key(info, (64,), "2", "bucket", {}, device(route)) for route in ("onednn", "torch")}
    assert len(keys) == 2
