"""Command-line interface: a thin layer over library calls a Python user can make too."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EnvironmentProblem, InputError

DEFAULT_MODELS = "tiny-chat,tiny-think,tiny-base"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other input error
        self.exit(EXIT_BAD_INPUT, f"stabprobe: error: {self.prog}: {message}\n")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(flag, text, "expected comma-separated positive integers") from None
    if not vals or any(v <= 0 for v in vals):
        raise InputError(flag, text, "expected comma-separated positive integers")
    return tuple(sorted(set(vals)))


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stabprobe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, models_default: str | None = DEFAULT_MODELS):
        sp.add_argument("--models", default=models_default, help="comma-separated registry names or model directories")
        sp.add_argument("--ladder", default=None, help="ladder YAML or published pair JSON (default: ladders/default.yaml)")
        sp.add_argument("--registry", default=None, help="model registry YAML (default: model_registry.yaml)")
        sp.add_argument("--out", default="runs", help="directory that receives the run directory")
        sp.add_argument("--allow-unpinned", action="store_true", help="load hub models without a pinned revision")

    r = sub.add_parser("run", help="audit, decode and score a ladder on models")
    common(r)
    r.add_argument("--lengths", default="64,512", help="output lengths to score (one decode at the longest)")
    r.add_argument("--variants", default="bf16", help="comma-separated: bf16,fp16,fp32,int8,int4")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--embedder", default=None, help="sentence-transformers directory (default: all-MiniLM-L6-v2)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 is fastest for tiny models on a busy machine")
    r.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("audit", help="token audit only: which pairs each model can tell apart")
    common(a)

    reg = sub.add_parser("registry", help="list or pin registry entries")
    regsub = reg.add_subparsers(dest="registry_command", required=True, parser_class=_Parser)
    rl = regsub.add_parser("list", help="show the entries")
    rl.add_argument("--registry", default=None)
    rp = regsub.add_parser("pin", help="resolve revisions (hub commits need the hub; local dirs get content hashes)")
    rp.add_argument("--registry", default=None)
    rp.add_argument("--names", default=None, help="only these entries")
    rp.add_argument("--local-only", action="store_true", help="only re-hash local model directories")

    rep = sub.add_parser("report", help="rebuild summary.json and report.md from a run directory")
    rep.add_argument("run_dir")

    ls = sub.add_parser("ladder", help="ladder utilities")
    lsub = ls.add_subparsers(dest="ladder_command", required=True, parser_class=_Parser)
    show = lsub.add_parser("show", help="print a ladder's pairs with whitespace and invisible characters made visible")
    show.add_argument("file")
    show.add_argument("--rung", default=None)
    return p


def _registry(args):
    from harness.registry import DEFAULT_REGISTRY, load_registry

    return load_registry(Path(args.registry) if args.registry else DEFAULT_REGISTRY)


def _ladder(args):
    from harness.ladder.load import DEFAULT_LADDER, load_ladder

    return load_ladder(Path(args.ladder) if args.ladder else DEFAULT_LADDER)


def cmd_run(args) -> int:
    from harness.pipeline import RunConfig, run
    from harness.registry import resolve_models

    registry = _registry(args)
    models = resolve_models(args.models, registry, allow_unpinned=args.allow_unpinned)
    ladder = _ladder(args)
    if args.threads is not None:
        if args.threads <= 0:
            raise InputError("--threads", str(args.threads), "expected a positive integer")
        import torch

        torch.set_num_threads(args.threads)
    cfg = RunConfig(
        models=tuple(models), ladder=ladder, out=Path(args.out), lengths=_ints(args.lengths, "--lengths"),
        variants=_words(args.variants), batch_size=args.batch_size, embedder=args.embedder,
        argv=tuple(sys.argv), progress=not args.no_progress,
    )
    result = run(cfg)
    print(result.terminal)
    print(f"run directory: {result.run_dir}")
    return result.exit_code


def cmd_audit(args) -> int:
    from harness.audit_run import run_audit
    from harness.registry import resolve_models

    registry = _registry(args)
    models = resolve_models(args.models, registry, allow_unpinned=args.allow_unpinned)
    run_dir, table, code = run_audit(models, _ladder(args), Path(args.out), argv=list(sys.argv))
    print(table)
    print(f"audit written to: {run_dir / 'audit.parquet'}")
    return code


def cmd_registry(args) -> int:
    if args.registry_command == "list":
        reg = _registry(args)
        print(f"{'name':<30}{'kind':<10}{'params':<8}{'revision':<22}source")
        for m in reg.models:
            rev = (m.revision or "UNPINNED")[:20]
            print(f"{m.name:<30}{m.kind:<10}{m.params:<8}{rev:<22}{m.source}")
        return 0
    from harness.registry_pin import pin_registry

    from harness.registry import DEFAULT_REGISTRY

    path = Path(args.registry) if args.registry else DEFAULT_REGISTRY
    for line in pin_registry(path, names=_words(args.names) if args.names else None, local_only=args.local_only):
        print(line)
    return 0


def cmd_report(args) -> int:
    from harness.pipeline import rebuild_report
    from harness.report_md import terminal_summary

    summary = rebuild_report(Path(args.run_dir))
    print(terminal_summary(summary))
    return 0


def cmd_ladder(args) -> int:
    from harness.ladder.load import load_ladder
    from harness.ladder.show import show_ladder

    print(show_ladder(load_ladder(Path(args.file)), rung=args.rung))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "audit": cmd_audit, "registry": cmd_registry, "report": cmd_report, "ladder": cmd_ladder}
    try:
        return handlers[args.command](args)
    except InputError as exc:
        print(f"stabprobe: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EnvironmentProblem as exc:
        print(f"stabprobe: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
