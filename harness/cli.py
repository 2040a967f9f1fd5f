"""Command-line interface: a thin layer over library calls a Python user can make too."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
from pathlib import Path

from harness.commands import cmd_audit, cmd_geometry, cmd_ladder, cmd_plan, cmd_registry, ladder_from_args, registry_from_args, words
from harness.core.engines import engine_names
from harness.decode.greedy import BATCHING_MODES, DEFAULT_BATCH_SIZE
from harness.ladder.records import RUNGS
from harness.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EnvironmentProblem, InputError, Terminated

DEFAULT_MODELS = "tiny-chat,tiny-think,tiny-base"


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, unless the help already names it or there is none to name."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, sub: bool = True, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)
        if sub:
            add_verbosity(self, top=False)

    def error(self, message: str):  # one line, exit 2, like every other input error
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(flag, text, "expected comma-separated positive integers") from None
    if not vals or any(v <= 0 for v in vals):
        raise InputError(flag, text, "expected comma-separated positive integers")
    return tuple(sorted(set(vals)))


def add_verbosity(sp, top: bool = True) -> None:
    """``-v`` / ``-q`` on the top-level parser and on every subcommand (``stabprobe run -v`` works too)."""
    default = 0 if top else argparse.SUPPRESS
    sp.add_argument("-v", "--verbose", action="count", default=default,
                    help="more detail on stderr (-v: debug messages and each library warning as it comes)")
    sp.add_argument("-q", "--quiet", action="count", default=default,
                    help="only warnings and errors on stderr (the result itself still goes to stdout)")


def add_threads(sp) -> None:
    """``--threads``, passed through to the library (the policy itself: harness.core.threads.policy_threads)."""
    sp.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default on CPU: 1, the only count measured batch-invariant; "
                         "more threads trade the identical rung's exactness for speed, and the verdict says so)")


def build_parser(prog: str = "stabprobe") -> argparse.ArgumentParser:
    from harness import __version__

    p = _Parser(prog=prog, sub=False, description="stabprobe: how far an open-weight model's output moves when its prompt "
                "barely changes, and whether that number can be trusted. `stabprobe COMMAND --help` for each command.")
    p.add_argument("--version", action="version", version=f"stabprobe {__version__}")
    add_verbosity(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def common(sp, models_default: str | None = DEFAULT_MODELS):
        sp.add_argument("--models", default=models_default, help="comma-separated registry names or model directories")
        source = sp.add_mutually_exclusive_group()
        source.add_argument("--ladder", default=None, help="ladder YAML or published pair JSON (default: ladders/default.yaml)")
        source.add_argument("--prompts", default=None,
                            help="your own prompts (.txt one per line, or .json/.yaml list), built into a full ladder")
        sp.add_argument("--registry", default=None, help="model registry YAML (default: model_registry.yaml)")
        sp.add_argument("--out", default="runs", help="directory that receives the run directory")
        sp.add_argument("--allow-unpinned", action="store_true", help="load hub models without a pinned revision")
        sp.add_argument("--trust-remote-code", action="store_true",
                        help="acknowledge custom model code; only entries that opt in (trust_remote_code: true) may use it")

    r = sub.add_parser("run", help="audit, decode and score a ladder on models")
    common(r)
    r.add_argument("--lengths", default="64,512", help="output lengths to score (one decode at the longest)")
    r.add_argument("--variants", default=None,
                   help="comma-separated: bf16,fp16,fp32,int8,int4, each optionally -nothink (default: each model's registry variants)")
    r.add_argument("--engine", default=None, choices=engine_names(),
                   help="decode engine of variants that do not name one (bf16@vllm does); default: the registry's (hf)")
    r.add_argument("--capture", default="generate", choices=("generate", "probe"),
                   help="HF engine's per-step readings: captured while decoding, or from the teacher-forced probe "
                        "(vLLM always uses the probe)")
    r.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="prompts decoded together at most")
    r.add_argument("--batching", default="rows", choices=BATCHING_MODES,
                   help="rows: mixed lengths, attention per equal-length group (batch-invariant, full batches); "
                        "bucket: exact-length batches (batch-invariant); padded: left-padded (not batch-invariant)")
    r.add_argument("--embedder", default=None, help="sentence-transformers directory (default: all-MiniLM-L6-v2)")
    r.add_argument("--store-full-dist", action="store_true",
                   help="also write each prompt's full prompt-end log-probabilities (V float32: ~0.6 MB per prompt at "
                        "Qwen3's vocabulary); by default the top-64 and the tail mass are kept")
    r.add_argument("--twin", action="store_true",
                   help="also read each pair's outputs after both prompts (teacher-forced twin divergence: KL per "
                        "step, first top-1 change, LLR; HF cells only; costs 1-2x the decode again)")
    add_threads(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bars (logging still says each phase)")
    r.add_argument("--cache", default=None,
                   help="generation cache directory (default: $STABPROBE_CACHE or ~/.cache/stabprobe)")
    r.add_argument("--no-cache", action="store_true", help="decode everything; read and write no cache")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="finish an interrupted run (its own config is used)")
    r.add_argument("--shard", default=None, metavar="I/N", help="run only cells with index %% N == I (e.g. $SLURM_ARRAY_TASK_ID/N)")
    r.add_argument("--executor", default="local", choices=("local", "ray"), help="where cells run")
    r.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode workers per cell, each one single-threaded process with its own copy of the model "
                        "(default: the cores this process may use, fewer for a cell whose work is too small to pay for a "
                        "worker, the reason in cell.json; with "
                        "--executor ray: Ray actors, default one per cell task); tables are identical for every N")

    mg = sub.add_parser("merge", help="join shard run directories into one run")
    mg.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="shard run directories of one run (--shard I/N)")
    mg.add_argument("--out", default="runs", help="directory that receives the merged run directory")
    add_threads(mg)

    a = sub.add_parser("audit", help="token audit only: which pairs each model can tell apart")
    common(a)

    reg = sub.add_parser("registry", help="list or pin registry entries")
    regsub = reg.add_subparsers(dest="registry_command", required=True, parser_class=_Parser, metavar="{list,pin}")
    rl = regsub.add_parser("list", help="show the entries")
    rl.add_argument("--registry", default=None, help="model registry YAML (default: the shipped model_registry.yaml)")
    rp = regsub.add_parser("pin", help="resolve revisions (hub commits need the hub; local dirs get content hashes)")
    rp.add_argument("--registry", default=None, help="model registry YAML (default: the shipped model_registry.yaml)")
    rp.add_argument("--names", default=None, help="only these entries")
    rp.add_argument("--local-only", action="store_true", help="only re-hash local model directories")

    rep = sub.add_parser("report", help="rebuild summary.json, report.md and report.html from a run directory")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (stabprobe run --out DIR writes DIR/<stamp>-<id>/)")

    sh = sub.add_parser("show", help="a run in the terminal: the headline, the pairs that moved most with their outputs, "
                                     "or one pair by id")
    sh.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    sh.add_argument("--pair", default=None, metavar="ID",
                    help="show this pair in full: MODEL/VARIANT/PAIR_ID, or a PAIR_ID (every model's row of it)")
    sh.add_argument("--worst", type=int, default=5, help="how many of the pairs that moved most to show with outputs")
    sh.add_argument("--length", type=int, default=None, help="output length to read (default: the headline's)")

    pl = sub.add_parser("plan", help="minimum detectable differences of a run, and base prompts a difference needs")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (reads its pairs.parquet)")
    pl.add_argument("--metric", default="emb_dist", help="pairs.parquet column (default emb_dist)")
    pl.add_argument("--difference", type=float, default=None,
                    help="a difference to detect: prints the base prompts it needs at 80%% power")
    pl.add_argument("--json", action="store_true", help="JSON instead of a table")

    cmp_ = sub.add_parser("compare", help="per model x variant x rung x length: did RUN_B move more or less than RUN_A?")
    cmp_.add_argument("run_a", metavar="RUN_A", help="the baseline run directory")
    cmp_.add_argument("run_b", metavar="RUN_B", nargs="?", default=None,
                      help="the run directory compared with it (omit with --models to compare two models of RUN_A)")
    cmp_.add_argument("--models", default=None, metavar="X,Y",
                      help="model selection: model X of RUN_A against model Y of RUN_B (or of RUN_A), paired by pair id")
    cmp_.add_argument("--json", action="store_true", help="JSON instead of a table (the same numbers)")
    cmp_.add_argument("--threshold", type=float, default=0.02,
                      help="smallest change of the mean that counts as regressed/improved (default 0.02)")
    cmp_.add_argument("--metric", default="emb_dist", help="pairs.parquet column to compare (default emb_dist)")

    geo = sub.add_parser("geometry", help="closed-form local stability (TCB, flip radius, Fisher KL boundary) "
                                          "checked on the models' own hidden states")
    common(geo)
    geo.add_argument("--eps", default="0.01,0.1,1", help="KL thresholds in nats for the boundary study")
    geo.add_argument("--max-new-tokens", type=int, default=32, help="greedy steps per prompt (each step is a position)")
    geo.add_argument("--max-positions", type=int, default=None,
                     help="per model, positions in the direction sweep (stable hash order; default: all)")
    geo.add_argument("--k", type=int, default=64, help="top-k tokens of the truncated Fisher F_k")
    add_threads(geo)

    from harness.stretch_study.commands import add_commands

    add_commands(sub, common, add_threads)

    gate = sub.add_parser("gate", help="CI gate: run the neighbourhoods of a gate config and check their thresholds "
                                       "(exit 0 pass, 1 fail, 2 config error)")
    gate.add_argument("--config", required=True, help="gate YAML (see docs/ci-gate.md)")
    gate.add_argument("--out", default=None, help="directory that receives the run directory (default: the config's `out`)")
    gate.add_argument("--junit", default=None, help="JUnit XML to write (default: the config's `junit`, else in the run directory)")
    gate.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads(gate)

    ls = sub.add_parser("ladder", help="ladder utilities")
    lsub = ls.add_subparsers(dest="ladder_command", required=True, parser_class=_Parser, metavar="{show,build}")
    show = lsub.add_parser("show", help="print a ladder's pairs with whitespace and invisible characters made visible")
    show.add_argument("file", metavar="FILE", help="a ladder YAML or published pair JSON")
    show.add_argument("--rung", default=None, choices=RUNGS, metavar="RUNG",
                      help=f"only this rung ({', '.join(RUNGS)}; default: every rung)")
    build = lsub.add_parser("build", help="turn a prompts file into a full ladder YAML (every rung, coverage in its header)")
    build.add_argument("--prompts", required=True, help=".txt (one prompt per line) or .json/.yaml list of prompts")
    build.add_argument("--out", default=None, help="ladder YAML to write (default: print it)")
    build.add_argument("--name", default=None, help="ladder name, part of every edit's seed (default: the file's stem)")
    build.add_argument("--edit-kinds", default=None,
                       help="comma-separated edit kinds or rungs to generate (default: all; e.g. casing,typo,keyboard_typo)")
    build.add_argument("--pairs-per-kind", default="1",
                       help="pairs each seeded kind makes per prompt, each from its own seeded draw (default 1, at most 20)")
    return p


def _cache_dir(args) -> Path | None:
    if args.no_cache:
        return None
    if args.cache:
        return Path(args.cache)
    return Path(os.environ.get("STABPROBE_CACHE") or Path.home() / ".cache" / "stabprobe")


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError("--shard", text, "expected I/N, e.g. 0/4") from None
    return i, n  # the range is checked by the library (harness.run.config.validate_config)


def _print_result(result) -> int:
    from harness.report.text import strip_control

    print(strip_control(result.terminal))  # model and template text: no terminal control sequences
    m = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
    print(f"decoded {m.get('decoded_prompts', 0)} prompts, {m.get('cached_prompts', 0)} from cache; status: {m['status']}")
    print(f"run directory: {result.run_dir}")
    report = result.run_dir / "report.html"
    if report.is_file():
        print(f"report: {report}  (or: stabprobe show {result.run_dir})")
    return result.exit_code


RESUME_KEEPS = ("resume", "threads", "no_progress", "command", "workers")
"""Flags that may accompany --resume; everything else is the recorded run's configuration."""


def _resume_conflicts(args) -> list[str]:
    """Flags given with --resume that disagree with the run's recorded configuration (which is what resumes).

    A flag repeating the recorded value (``--no-cache`` on a run made without a cache) is no conflict;
    model, ladder, variant, registry and embedder flags are refused whenever given.
    """
    from harness.core.rundir_read import read_manifest

    conf = read_manifest(Path(args.resume), rebuild=True)["config"]
    defaults = build_parser().parse_args(["run"])
    recorded_cache = conf.get("cache_dir")
    same = {
        "no_cache": lambda v: recorded_cache is None,
        "cache": lambda v: recorded_cache is not None and Path(v).resolve() == Path(recorded_cache).resolve(),
        "lengths": lambda v: _ints(v, "--lengths") == tuple(sorted(conf["lengths"])),
        "batch_size": lambda v: v == conf["batch_size"],
        "batching": lambda v: v == conf["batching"],
        "store_full_dist": lambda v: v == bool(conf.get("store_full_dist", False)),
        "twin": lambda v: v == bool(conf.get("twin", False)),
        "executor": lambda v: v == conf.get("executor", "local"),
        "shard": lambda v: v == conf.get("shard"),
        "out": lambda v: Path(v).resolve() == Path(args.resume).resolve().parent,
    }
    return [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
            if k not in RESUME_KEEPS and v != getattr(defaults, k, None) and not same.get(k, lambda _: False)(v)]


def cmd_run(args) -> int:
    from harness.run.pipeline import RunConfig, run
    from harness.run.resume import resume
    from harness.models.registry import resolve_models

    if args.resume:
        conflicts = _resume_conflicts(args)
        if conflicts:
            raise InputError("--resume", ", ".join(conflicts),
                             "a resumed run keeps its recorded configuration (cache included); "
                             "drop these flags, or start a new run")
        return _print_result(resume(Path(args.resume), argv=tuple(sys.argv), progress=not args.no_progress,
                                    threads=args.threads,
                                    **({"workers": args.workers} if args.workers is not None else {})))
    registry = registry_from_args(args)
    models = resolve_models(args.models, registry, allow_unpinned=args.allow_unpinned,
                            trust_remote_code=getattr(args, "trust_remote_code", False))
    ladder = ladder_from_args(args)
    cfg = RunConfig(
        models=tuple(models), ladder=ladder, out=Path(args.out), lengths=_ints(args.lengths, "--lengths"),
        variants=words(args.variants) if args.variants else None, batch_size=args.batch_size, batching=args.batching,
        embedder=args.embedder, argv=tuple(sys.argv), progress=not args.no_progress, cache_dir=_cache_dir(args),
        shard=_shard(args.shard), executor=args.executor, ray_address=args.ray_address, engine=args.engine,
        capture=args.capture,
        store_full_dist=args.store_full_dist, threads=args.threads, twin=args.twin,
        workers=args.workers,
    )
    return _print_result(run(cfg))


def cmd_merge(args) -> int:
    from harness.run.resume import merge_runs

    return _print_result(merge_runs([Path(d) for d in args.run_dirs], Path(args.out), argv=sys.argv, threads=args.threads))


def cmd_report(args) -> int:
    from harness.run.resume import rebuild_report
    from harness.report.markdown import terminal_summary

    summary = rebuild_report(Path(args.run_dir))
    print(terminal_summary(summary))
    return 0


def cmd_compare(args) -> int:
    import json

    from harness.compare import compare_json, compare_ranking, compare_runs, exit_code, render_compare, render_ranking
    from harness.core.jsonsafe import json_safe
    from harness.errors import InputError

    models = None
    if args.models is not None:
        parts = [m.strip() for m in args.models.split(",")]
        if len(parts) != 2 or not all(parts):
            raise InputError("--models", args.models, "expected two model names: X,Y")
        models = (parts[0], parts[1])
    rows = compare_runs(Path(args.run_a), Path(args.run_b) if args.run_b else None, threshold=args.threshold,
                        metric=args.metric, models=models)
    # Model selection also says whether the two models' order survives the perturbations (issue 36).
    ranking = compare_ranking(Path(args.run_a), Path(args.run_b) if args.run_b else None, models) if models else None
    if args.json:
        out = compare_json(rows, args.metric, args.threshold, models)
        if ranking is not None:
            out["ranking"] = json_safe(ranking)
        print(json.dumps(out, indent=1))
    else:
        print(render_compare(rows, args.metric, args.threshold, models))
        if ranking is not None:
            print()
            print(render_ranking(ranking))
    return exit_code(rows)


def cmd_gate(args) -> int:
    from harness.gate.run import run_gate

    result = run_gate(Path(args.config), argv=tuple(sys.argv), out=Path(args.out) if args.out else None,
                      junit=Path(args.junit) if args.junit else None, progress=not args.no_progress, threads=args.threads)
    print(result.terminal)
    print(f"run directory: {result.run_dir}")
    print(f"junit: {result.junit}")
    print(f"summary: {result.summary_md}")
    return result.exit_code


def _quiet_libraries() -> None:
    """Library progress bars and info logs would break the one-line error contract on stderr."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def cmd_show(args) -> int:
    from harness.report.show import show_run

    print(show_run(Path(args.run_dir), pair=args.pair, worst=args.worst, length=args.length))
    return 0


def _safe_line(text: str) -> str:
    from harness.report.text import strip_control

    return " ".join(strip_control(text).split())


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


def main(argv: list[str] | None = None, prog: str = "stabprobe") -> int:
    from harness.core.log import configure, report_warnings

    args = build_parser(prog).parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler, `kill`, a container stop) ends the run as Ctrl-C does: the manifest says
        # "interrupted" and --resume finishes it, instead of "running" for ever.
        signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_libraries()
    tally = configure(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    handlers = {"merge": cmd_merge, "run": cmd_run, "audit": cmd_audit, "registry": cmd_registry, "report": cmd_report, "ladder": cmd_ladder,
                "compare": cmd_compare, "plan": cmd_plan, "show": cmd_show,
                "geometry": cmd_geometry,
                "gate": cmd_gate}
    if args.command in ("stretch", "floor"):
        from harness.stretch_study.commands import HANDLERS

        handlers[args.command] = lambda a: HANDLERS[a.command](a, registry_from_args, ladder_from_args)
    try:
        return _dispatch(handlers, args)
    finally:
        report_warnings(tally)


def _dispatch(handlers, args) -> int:
    try:
        return handlers[args.command](args)
    except InputError as exc:
        print(f"stabprobe: error: {_safe_line(exc.one_line())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EnvironmentProblem as exc:
        print(f"stabprobe: error: {_safe_line(str(exc))}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:
        # Finished cells are on disk and the manifest says "interrupted": resumable.
        print("stabprobe: interrupted; finish with `stabprobe run --resume RUN_DIR`", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.ENAMETOOLONG):
            where = exc.filename or "output"
            print(f"stabprobe: error: {where}: {exc.strerror} (finished cells are kept; free space and --resume)",
                  file=sys.stderr)
            return EXIT_ENVIRONMENT
        raise


if __name__ == "__main__":
    sys.exit(main())
