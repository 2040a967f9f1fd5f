"""`stabprobe stretch` and `stabprobe floor`: argument parsing and the thin calls into the library.

The CLI's own helpers (registry, ladder, the --threads flag) are passed in, so this package never imports the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_commands(sub, common, add_threads) -> None:
    st = sub.add_parser("stretch", help="layer profiles of the ladder's pairs, per-block Jacobian stretching, "
                                        "growth along the generation")
    common(st)
    fl = sub.add_parser("floor", help="dynamical floor of quantization: P, drift both ways and stretching per "
                                      "model x bit width")
    common(fl)
    fl.add_argument("--variants", default="bf16,int8,int4,quanto-int2",
                    help="bf16 (reference), fp16, fp32, int8, int4 (bitsandbytes), quanto-int8/int4/int2 (optimum-quanto), "
                         "llama.cpp's GGUF types f16@llamacpp ... q2_k@llamacpp, or `llamacpp` for the whole GGUF ladder")
    fl.add_argument("--random-init-controls", action="store_true",
                    help="add a seeded random-init twin of every local model as a control")
    for sp, prompts in ((st, 8), (fl, 4)):
        sp.add_argument("--max-prompts", type=int, default=None, help="use the pairs of the first N base prompts (default: all)")
        sp.add_argument("--stretch-prompts", type=int, default=prompts,
                        help=f"base prompts whose prompt end gets the per-block power iteration (default {prompts})")
        sp.add_argument("--max-new-tokens", type=int, default=32, help="greedy tokens per prompt")
        sp.add_argument("--tol", type=float, default=1e-5, help="relative tolerance of the power iteration")
        sp.add_argument("--max-iter", type=int, default=200, help="iteration cap of the power iteration")
        add_threads(sp)


def cmd_stretch(args, registry, ladder) -> int:
    from harness.models.registry import resolve_models
    from harness.stretch_study.stretch import StretchConfig, run_stretch

    models = resolve_models(args.models, registry(args), allow_unpinned=args.allow_unpinned,
                            trust_remote_code=getattr(args, "trust_remote_code", False))
    result = run_stretch(StretchConfig(
        models=tuple(models), ladder=ladder(args), out=Path(args.out), max_prompts=args.max_prompts,
        stretch_prompts=args.stretch_prompts, max_new_tokens=args.max_new_tokens, tol=args.tol, max_iter=args.max_iter,
        argv=tuple(sys.argv), threads=args.threads))
    print(result.terminal)
    print(f"stretch written to: {result.run_dir}")
    return result.exit_code


def cmd_floor(args, registry, ladder) -> int:
    from harness.models.registry import resolve_models
    from harness.stretch_study.floor import FloorConfig, run_floor

    models = resolve_models(args.models, registry(args), allow_unpinned=args.allow_unpinned,
                            trust_remote_code=getattr(args, "trust_remote_code", False))
    result = run_floor(FloorConfig(
        models=tuple(models), ladder=ladder(args), out=Path(args.out), variants=tuple(x.strip() for x in args.variants.split(",") if x.strip()),
        max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens, stretch_prompts=args.stretch_prompts,
        tol=args.tol, max_iter=args.max_iter, random_init_controls=args.random_init_controls, argv=tuple(sys.argv),
        threads=args.threads))
    print(result.terminal)
    print(f"floor written to: {result.run_dir}")
    return result.exit_code


HANDLERS = {"stretch": cmd_stretch, "floor": cmd_floor}
