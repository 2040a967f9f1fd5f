"""The smaller subcommands (audit, registry, ladder, geometry) and the argument helpers they share with
harness.cli, which keeps the parser, `run`, `merge`, `report`, `compare`, `gate` and `main`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from harness.errors import InputError


def words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def registry_from_args(args):
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    return load_registry(Path(args.registry) if args.registry else DEFAULT_REGISTRY)


def ladder_from_args(args):
    from harness.ladder.load import DEFAULT_LADDER, load_ladder

    if args.prompts:
        from harness.ladder.prompts_file import ladder_from_prompts

        return ladder_from_prompts(Path(args.prompts), note=lambda line: print(f"stabprobe: note: {line}", file=sys.stderr))
    return load_ladder(Path(args.ladder) if args.ladder else DEFAULT_LADDER)


def cmd_audit(args) -> int:
    from harness.run.audit_command import run_audit
    from harness.models.registry import resolve_models

    registry = registry_from_args(args)
    models = resolve_models(args.models, registry, allow_unpinned=args.allow_unpinned,
                            trust_remote_code=getattr(args, "trust_remote_code", False))
    run_dir, table, code = run_audit(models, ladder_from_args(args), Path(args.out), argv=list(sys.argv))
    print(table)
    print(f"audit written to: {run_dir / 'audit.parquet'}")
    return code


def cmd_registry(args) -> int:
    if args.registry_command == "list":
        reg = registry_from_args(args)
        print(f"{'name':<30}{'kind':<10}{'params':<8}{'revision':<22}source")
        for m in reg.models:
            rev = (m.revision or "UNPINNED")[:20]
            print(f"{m.name:<30}{m.kind:<10}{m.params:<8}{rev:<22}{m.source}")
        return 0
    from harness.models.pin import pin_registry

    from harness.models.registry import DEFAULT_REGISTRY

    path = Path(args.registry) if args.registry else DEFAULT_REGISTRY
    for line in pin_registry(path, names=words(args.names) if args.names else None, local_only=args.local_only):
        print(line)
    return 0


def _edit_kinds(text: str | None) -> tuple[str, ...] | None:
    from harness.ladder.build import resolve_kinds

    if text is None:
        return None
    if not words(text):
        raise InputError("--edit-kinds", text, "expected comma-separated edit kinds or rungs")
    try:
        return resolve_kinds(list(words(text)))
    except ValueError as exc:
        raise InputError("--edit-kinds", text, str(exc)) from None


def _pairs_per_kind(text: str) -> int:
    from harness.ladder.build import MAX_PAIRS_PER_KIND

    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PAIRS_PER_KIND:
        raise InputError("--pairs-per-kind", text, f"expected an integer from 1 to {MAX_PAIRS_PER_KIND}")
    return n


def cmd_ladder_build(args) -> int:
    from harness.ladder.build import build_ladder
    from harness.ladder.coverage import coverage_lines, kind_count_lines
    from harness.ladder.prompts_file import read_prompts_file
    from harness.ladder.write import ladder_yaml, write_ladder

    read = read_prompts_file(Path(args.prompts), name=args.name)
    if read.duplicates_note():
        print(f"stabprobe: note: {read.duplicates_note()}", file=sys.stderr)
    read = dataclasses.replace(read, prompt_set=dataclasses.replace(
        read.prompt_set, edit_kinds=_edit_kinds(args.edit_kinds), pairs_per_kind=_pairs_per_kind(args.pairs_per_kind)))
    ladder = build_ladder(read.prompt_set)
    if args.out is None:
        print(ladder_yaml(read.prompt_set, ladder), end="")
        return 0
    out = write_ladder(read.prompt_set, ladder, Path(args.out))
    blank = f" ({read.blank_lines} blank lines skipped)" if read.blank_lines else ""
    print(f"ladder {ladder.name}: {len(ladder.prompts)} prompts{blank}, {len(ladder.pairs)} pairs")
    print("\n".join("  " + line for line in coverage_lines(ladder)))
    print("  by edit kind:")
    print("\n".join("    " + line for line in kind_count_lines(ladder)))
    print(f"written to: {out}")
    return 0


def cmd_ladder(args) -> int:
    if args.ladder_command == "build":
        return cmd_ladder_build(args)
    from harness.ladder.load import load_ladder
    from harness.ladder.show import show_ladder

    print(show_ladder(load_ladder(Path(args.file)), rung=args.rung))
    return 0


def floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(flag, text, "expected comma-separated positive numbers") from None
    return tuple(sorted(set(vals)))  # the values are checked by the library (validate_geometry_config)


def cmd_geometry(args) -> int:
    from harness.models.registry import resolve_models
    from harness.geometry.study import GeometryConfig, run_geometry

    eps = floats(args.eps, "--eps")
    registry = registry_from_args(args)
    models = resolve_models(args.models, registry, allow_unpinned=args.allow_unpinned,
                            trust_remote_code=getattr(args, "trust_remote_code", False))
    cfg = GeometryConfig(models=tuple(models), ladder=ladder_from_args(args), out=Path(args.out), eps=eps,
                         max_new_tokens=args.max_new_tokens, max_positions=args.max_positions, k=args.k,
                         argv=tuple(sys.argv), threads=args.threads)
    result = run_geometry(cfg)
    print(result.terminal)
    print(f"geometry written to: {result.run_dir}")
    return result.exit_code


def cmd_plan(args) -> int:
    """`stabprobe plan RUN_DIR`: the minimum detectable difference of every rung mean and model comparison, and
    with --difference the base prompts it would take (harness.summary.power)."""
    import json
    import math

    from harness.core.rundir_read import read_table
    from harness.errors import InputError
    from harness.summary.power import POWER, plan_rows

    if args.difference is not None and not (math.isfinite(args.difference) and args.difference > 0):
        raise InputError("--difference", "", f"expected a positive number, got {args.difference}")
    path = Path(args.run_dir) / "pairs.parquet"
    pairs = read_table(path)
    if args.metric not in pairs.columns or not (pairs[args.metric].dtype.kind in "fiub"):
        raise InputError(str(path), args.metric, "--metric: not a numeric column of pairs.parquet")
    rows = plan_rows(pairs, args.metric, args.difference)
    if args.json:
        print(json.dumps({"metric": args.metric, "power": POWER, "rows": rows}, indent=1, allow_nan=True))
        return 0
    head = ["kind", "model", "variant", "rung", "L", "prompts", "missing", "SD per prompt", "MDE (80%)"]
    if args.difference is not None:
        head.append(f"prompts for {args.difference:g}")
    body = []
    for r in rows:
        line = [r["kind"], r["model"], str(r["variant"]), r["rung"], str(r["length"]), str(r["n_prompts"]),
                str(r["n_missing"]), f"{r['prompt_sd']:.4f}", "inf" if math.isinf(r["mde"]) else f"{r['mde']:.4f}"]
        if args.difference is not None:
            line.append("-" if r["prompts_needed"] is None else str(r["prompts_needed"]))
        body.append(line)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    for line in [head, *body]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
    print(f"MDE: smallest true difference of {args.metric} the prompt-level test detects with {POWER:.0%} power at "
          "alpha 0.05; 'cell' rows: a shift of that mean from a fixed value; 'comparison' rows: two models on their "
          "shared pairs; inf: fewer than 6 prompts (no sign-flip p-value reaches 0.05).")
    return 0
