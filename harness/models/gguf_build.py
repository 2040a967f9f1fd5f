"""GGUF variants made by llama.cpp's own tools from a model's bf16 directory, memoized by sha256.

The chain is llama.cpp's: the vendored ``convert_hf_to_gguf.py`` writes a BF16
GGUF of the HF directory (lossless for bf16 weights; F16/F32 on request), then
``llama_cpp.llama_model_quantize`` makes each file type from that BF16 file
(llama.cpp's ``llama-quantize``, in process). Every file lands in
``<store>/gguf-variants/<key[:2]>/<key>/model.gguf`` next to ``record.json``
(harness.core.memo's layout), the key hashing the source directory's content
revision, the file type, the llama-cpp-python version and BUILD_VERSION; a
stored file is reused only when its sha256 still matches its record.

The record (the manifest's ``engine.args.gguf``) gives the file's sha256 and
size, the llama.cpp version and the vendored tree it came from, and what the
name hides: k-quants need rows of 256 values, so a model whose rows are not a
multiple (SmolLM2: 576) gets block-32 types for those tensors. Hence the
tensor types and the *effective* bits per parameter of every file.

The converter comes from llama-cpp-python's source distribution (the wheel does
not ship it): $STABPROBE_LLAMACPP_SRC, else ``.wheels/llama_cpp_python-<v>/``
unpacked by ``make install-llamacpp``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.core import rundir
from harness.models.gguf import store_root, wheel_dir

BUILD_VERSION = "1"
"""Bump when the chain itself changes (it is part of every file's key)."""
NAMESPACE = "gguf-variants"
LLAMACPP_VERSION = "0.3.36"
"""The llama-cpp-python release the project pins (pyproject's ``llamacpp`` extra; its sdist holds the converter)."""
FILE_TYPES = {
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16", "f16": "LLAMA_FTYPE_MOSTLY_F16", "fp16": "LLAMA_FTYPE_MOSTLY_F16",
    "fp32": "LLAMA_FTYPE_ALL_F32", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
}
"""Variant weights -> llama.cpp file type (llama_cpp's constant)."""
_CONVERTED = {"bf16": "bf16", "f16": "f16", "fp16": "f16", "fp32": "f32"}
"""Types the converter writes itself (``--outtype``); every other type is quantized from the BF16 file."""


class GgufBuildError(RuntimeError):
    """A GGUF could not be made (converter missing, architecture unsupported, quantize failed): one line."""


def llamacpp_source() -> Path:
    """The vendored llama.cpp tree of llama-cpp-python's sdist (holds convert_hf_to_gguf.py, gguf-py, conversion/)."""
    env = os.environ.get("STABPROBE_LLAMACPP_SRC")
    root = Path(env) if env else wheel_dir() / f"llama_cpp_python-{LLAMACPP_VERSION}"
    return root / "vendor" / "llama.cpp" if (root / "vendor" / "llama.cpp").is_dir() else root


def converter() -> Path:
    script = llamacpp_source() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise GgufBuildError(f"llama.cpp's convert_hf_to_gguf.py is not at {script}; run make install-llamacpp "
                             f"(unpacks llama-cpp-python's sdist into .wheels/) or set STABPROBE_LLAMACPP_SRC")
    return script


def llamacpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"llama-cpp-python {version('llama-cpp-python')}"
    except PackageNotFoundError:
        return "llama-cpp-python not installed"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _key(source_revision: str, weights: str) -> str:
    return hashlib.sha256(json.dumps([BUILD_VERSION, source_revision, FILE_TYPES[weights], llamacpp_version()]).encode()
                          ).hexdigest()


def describe(path: Path) -> dict[str, Any]:
    """File type, size, parameters, effective bits per parameter and tensor types of a GGUF (gguf's reader)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    types: Counter[str] = Counter()
    params = data_bytes = 0
    for t in reader.tensors:
        types[t.tensor_type.name] += 1
        params += int(t.n_elements)
        data_bytes += int(t.n_bytes)
    field = reader.fields.get("general.file_type")
    ftype = int(field.parts[field.data[0]][0]) if field is not None else -1
    size = path.stat().st_size
    return {"file_type_id": ftype, "bytes": size, "tensor_bytes": data_bytes, "parameters": params,
            "bits_per_parameter": round(8 * size / params, 4) if params else float("nan"),
            "tensor_bits_per_parameter": round(8 * data_bytes / params, 4) if params else float("nan"),
            "tensor_types": dict(sorted(types.items())), "tensors": len(reader.tensors)}


PRE_FALLBACK = "STABPROBE_PRE_TOKENIZER_FALLBACK"
_SHIM = f"""
import runpy, sys
script = sys.argv[1]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
from conversion import base
_pre = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return _pre(self, tokenizer)
    except NotImplementedError:
        print("{PRE_FALLBACK}", file=sys.stderr)
        return "default"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""
"""Runs the converter with one change: a BPE pre-tokenizer it does not know by hash (the demo models' own
tokenizer) is written as llama.cpp's "default" instead of refusing the model. The harness never lets llama.cpp
tokenize (it is fed the template's token ids), so the pre-tokenizer only labels the file; the record says so."""


def _run_converter(model_dir: Path, outtype: str, out: Path) -> bool:
    """Convert; True when the pre-tokenizer fallback was used."""
    cmd = [sys.executable, "-c", _SHIM, str(converter()), str(model_dir), "--outtype", outtype, "--outfile", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the vendored gguf-py, matching the script
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out.is_file():
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit {done.returncode}"
        raise GgufBuildError(f"llama.cpp's convert_hf_to_gguf.py could not convert {model_dir.name}: {last[:300]}")
    return PRE_FALLBACK in done.stderr


def _quantize(src: Path, out: Path, weights: str, threads: int) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FILE_TYPES[weights])
    params.nthread = int(threads)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0 or not out.is_file():
        raise GgufBuildError(f"llama_model_quantize refused {weights} for {src.name} (returned {rc})")


def read_record(key: str) -> dict[str, Any] | None:
    root = store_root() / NAMESPACE / key[:2] / key
    try:
        rec = json.loads((root / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = root / "model.gguf"
    if not path.is_file() or path.stat().st_size != rec.get("bytes") or _sha256(path) != rec.get("sha256"):
        return None  # damaged or half-written: made again
    return rec


def build_gguf(model_dir: Path, source_revision: str, weights: str, threads: int = 1) -> tuple[Path, dict[str, Any]]:
    """The GGUF of ``weights`` made from the HF directory ``model_dir`` (content revision ``source_revision``);
    made once, then reused from the store. Raises :class:`GgufBuildError` (one line) when it cannot be made."""
    if weights not in FILE_TYPES:
        raise GgufBuildError(f"no llama.cpp file type for variant weights {weights!r} (expected one of "
                             f"{', '.join(FILE_TYPES)})")
    key = _key(source_revision, weights)
    root = store_root() / NAMESPACE / key[:2] / key
    rec = read_record(key)
    if rec is not None:
        return root / "model.gguf", {**rec, "made_now": False}
    t0 = time.perf_counter()
    base_rec = None
    if weights in _CONVERTED:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".make-") as tmp:
            out = Path(tmp) / "model.gguf"
            fallback = _run_converter(model_dir, _CONVERTED[weights], out)
            method = f"convert_hf_to_gguf.py --outtype {_CONVERTED[weights]}" + (
                "; BPE pre-tokenizer not recognized by hash, written as 'default' (llama.cpp never tokenizes here: "
                "it is fed the harness's token ids)" if fallback else "")
            rec = _finish(root, out, weights, source_revision, method, None, t0)
    else:
        base, base_rec = build_gguf(model_dir, source_revision, "bf16", threads)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".make-") as tmp:
            out = Path(tmp) / "model.gguf"
            _quantize(base, out, weights, threads)
            method = f"llama_model_quantize({FILE_TYPES[weights]}) of the BF16 GGUF"
            rec = _finish(root, out, weights, source_revision, method, base_rec["sha256"], t0)
    return root / "model.gguf", {**rec, "made_now": True}


def _finish(root: Path, out: Path, weights: str, source_revision: str, method: str, base_sha: str | None,
            t0: float) -> dict[str, Any]:
    src = llamacpp_source()
    rec = {"build_version": BUILD_VERSION, "weights": weights, "file_type": FILE_TYPES[weights],
           "sha256": _sha256(out), **describe(out), "source_revision": source_revision, "method": method,
           "base_sha256": base_sha, "llama_cpp": llamacpp_version(),
           # The sdist carries no git metadata: the vendored tree is pinned by the release it came with.
           "llama_cpp_commit": _vendored_commit(src), "converter": str(src / "convert_hf_to_gguf.py"),
           "seconds": round(time.perf_counter() - t0, 3)}
    final = root / "model.gguf"
    os.replace(out, final)  # same filesystem: whole or absent
    rundir.atomic_write_json(root / "record.json", rec)
    shutil.rmtree(out.parent, ignore_errors=True)
    return rec


def _vendored_commit(src: Path) -> str:
    """llama.cpp's commit as the build recorded it, else the release that vendors it."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace")
    except Exception:  # noqa: BLE001 - not installed: the tree alone
        info = ""
    head = src / ".git" / "HEAD"
    if head.is_file():
        return head.read_text().strip()
    return f"vendored by {llamacpp_version()} (sdist: no git metadata){'; ' + info.strip()[:120] if info else ''}"
