"""The `adaptinf` command: demo-data, run-local, stage, compare, pool, models."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from types import TracebackType


def _demo_data(args: argparse.Namespace) -> int:
    from adaptinf.data.demo import write_demo_stream
    from adaptinf.data.demo_skewed import write_skewed_stream
    from adaptinf.model.tiny import build_tiny_model
    write = write_skewed_stream if args.stream == "skewed" else write_demo_stream
    if args.eval_samples is not None and args.eval_samples < 1:
        print("error: --eval-samples must be at least 1", file=sys.stderr)
        return 2
    if args.size == "small" and args.stream != "skewed":
        print("error: --size small exists for --stream skewed only", file=sys.stderr)
        return 2
    if args.family != "llava" and args.modality == "text":
        print(f"error: --family {args.family} is an image-text family: it needs --modality multimodal", file=sys.stderr)
        return 2
    if args.vocabulary != "small" and (args.stream != "skewed" or args.modality != "text"):
        print("error: --vocabulary large exists for --stream skewed --modality text only", file=sys.stderr)
        return 2
    extra = {"vocabulary": args.vocabulary} if args.stream == "skewed" else {}
    info = write(args.out, seed=args.seed, size=args.size, modality=args.modality, eval_samples=args.eval_samples,
                 **extra)
    build_tiny_model(Path(args.out) / "model", multimodal=args.modality == "multimodal", seed=args.seed,
                     family=args.family)
    kind = f"tiny {args.family} model" if args.modality == "multimodal" else "tiny causal LM"
    print(f"wrote {len(info['datasets'])} datasets, {len(info['eval'])} eval sets and a {kind} to {args.out}")
    print(f"next: adaptinf run-local {args.out} --workdir WORKDIR")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from adaptinf.runner import collect, run_local
    from adaptinf.runner.table import header, row
    from adaptinf.runner.local import default_tracking
    run, datasets = collect(args.paths + args.file)
    if not args.verbose:  # the step table and progress bars say enough; -v brings stage logs back
        logging.getLogger("adaptinf").setLevel(logging.WARNING)
    workdir = Path(args.workdir or "adaptinf-work").resolve()
    skills = [t.skill for t in run.spec.eval.suite]
    skills = list(dict.fromkeys(skills))

    def start() -> None:  # only once the workdir is locked and its specs match the request
        kept = " (steps already started keep the workdir's specs)" if args.continue_anyway else ""
        print(f"run {run.name!r}: {len(datasets)} datasets, strategy {args.strategy or run.spec.strategy}{kept}, "
              f"workdir {workdir}", flush=True)
        print(header(skills), flush=True)

    summary = run_local(run, datasets, workdir, strategy=args.strategy, seed=args.seed,
                        tracking=False if args.no_mlflow else True, progress=not args.no_progress,
                        on_start=start, on_step=lambda step: print(row(step, skills), flush=True),
                        continue_anyway=args.continue_anyway, restart_from=args.restart_from)
    final = summary["final"]
    print(f"final: avg_acc {final['avg_acc']:.3f}  forgetting_rate {final['forgetting_rate']:.1f}% "
          f"(taught pairs only: {final.get('forgetting_rate_taught', 0.0):.1f}%)"
          if final["avg_acc"] is not None else "final: no evaluated step")
    for failed in summary.get("failed_steps", []):
        print(f"step {failed['step']} ({failed['dataset']}) skipped: {failed['reason']}")
    print(f"summary: {workdir / run.name / 'summary.json'}")
    if not args.no_mlflow:
        from adaptinf.tracking import redact_uri
        uri = redact_uri(default_tracking(workdir, run.spec.mlflow.tracking_uri))
        hint = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        print(f"MLflow: experiment {run.spec.mlflow.experiment!r} at {uri}\n  view: {hint}")
        if run.spec.mlflow.model == "register":
            print(f"  model: models:/{run.name}@current (the newest adapter; a registry version per step)")
    return 0


def _compare_merge(args: argparse.Namespace) -> int:
    from adaptinf.runner import report
    from adaptinf.runner.pooled import pool_tables, read_table
    tables, sources = [], []
    for given in args.tables:
        path = Path(given) / "table.json" if Path(given).is_dir() else Path(given)
        try:
            rows = read_table(path)
        except (OSError, ValueError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        tables.append(rows)
        sources.append(f"{given} (seeds {', '.join(map(str, rows[0]['seeds']))})")
    try:
        rows = pool_tables(tables)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preamble = ("Merged by `adaptinf compare-merge` from " + "; ".join(sources) + ": the per-seed figures of the "
                "same stream pooled, mean ± std over seeds; relative gain against the best per-skill score of "
                "sequential training (same seed); stage seconds are the tables' means weighted by their seeds.")
    for name, text in (("table.json", json.dumps(rows, indent=1)), ("table.md", report.table_markdown(rows, preamble=preamble))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)   # a merged table is whole or absent, never half written
    print((out / "table.md").read_text())
    return 0


def seed_list(text: str) -> tuple[int, ...]:
    """`--seeds`: "5" → 0..4; "3-4" → (3, 4); "3,7" → (3, 7)."""
    try:
        if "," in text:
            seeds = tuple(int(t) for t in text.split(",") if t.strip())
        elif "-" in text.strip()[1:]:
            first, last = (int(t) for t in text.split("-", 1))
            seeds = tuple(range(first, last + 1))
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seeds (5), a range (3-4) or a list (3,7)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: at least one seed, none negative, none twice")
    return seeds


def _compare(args: argparse.Namespace) -> int:
    from adaptinf.runner.compare import DEFAULT_STRATEGIES, CompareConfig, compare
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip()) if args.strategies \
        else DEFAULT_STRATEGIES
    try:
        cfg = CompareConfig(out=Path(args.out), strategies=strategies, seeds=args.seeds,
                            quick=args.quick, modality=args.modality, jobs=args.jobs or CompareConfig.jobs_default(),
                            tracking=False if args.no_mlflow else True, inputs=tuple(args.paths + args.file),
                            train_budget=args.train_budget, pool_budget=args.pool_budget, steps=args.steps,
                            eval_samples=args.eval_samples)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"compare: {len(cfg.strategies)} strategies × {len(cfg.seeds)} seeds, {cfg.jobs} worker(s), out {cfg.out}",
          flush=True)
    compare(cfg, progress=not args.no_progress)
    print((cfg.out / "table.md").read_text())
    print(f"written: {cfg.out / 'table.json'}, {cfg.out / 'table.md'}, {cfg.out / 'skills_over_time.png'}")
    meta = json.loads((cfg.out / "meta.json").read_text())
    if "mlflow_uri" in meta:
        print(f"MLflow: experiment 'adapt-inf-compare' at {meta['mlflow_uri']}")
    return 0


def positive(text: str) -> int:
    from adaptinf.threads import positive as threads
    return threads(text)


def _step_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"steps are numbered from 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from adaptinf import __version__
    from adaptinf.spec import STRATEGIES
    from adaptinf.model.families import TINY_FAMILIES
    from adaptinf.stages.cli import add_parser as add_stage
    from adaptinf.pool_admin import add_parser as add_pool
    from adaptinf.model.prepare import add_parser as add_models
    parser = argparse.ArgumentParser(prog="adaptinf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"adaptinf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write the synthetic multi-skill stream and a tiny model")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("default", "small", "quick"), default="default",
                   help="quick: a tenth (tests); small: a quarter, --stream skewed only (a real model on CPU)")
    p.add_argument("--eval-samples", type=int, help="held-out eval records per skill (default: by size)")
    p.add_argument("--modality", choices=("multimodal", "text"), default="multimodal")
    p.add_argument("--stream", choices=("default", "skewed"), default="default",
                   help="skewed: paraphrased prompts, shared images/words, 10x size skew, a rare skill")
    p.add_argument("--vocabulary", choices=("small", "large"), default="small",
                   help="skewed text stream's subjects: small (22 words; eval sets repeat prompts) or large "
                        "(hundreds of distinct prompts a skill, eval sets without repeats)")
    p.add_argument("--family", choices=TINY_FAMILIES, default="llava",
                   help="the tiny image-text model's architecture: llava (LLaVA-1.5, a fixed 16 tokens an image), "
                        "llava-next, qwen2-vl, qwen2.5-vl (the processor sets each image's token count)")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("run-local", help="run a LifelongRun over its datasets on this machine")
    p.add_argument("paths", nargs="*", help="demo-data folder and/or YAML files")
    p.add_argument("-f", "--file", action="append", default=[], help="LifelongRun / InstructionDataset YAML")
    p.add_argument("--workdir", help="artifacts, summary.json and mlflow.db (default ./adaptinf-work)")
    p.add_argument("--strategy", help=f"override spec.strategy: {', '.join(STRATEGIES)}")
    p.add_argument("--seed", type=int, help="override spec.seed")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=positive, help="CPU threads per stage (default: the CPU quota and "
                                                    "affinity this process has; see README)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--continue-anyway", action="store_true",
                        help="resume a workdir whose recorded specs differ: started steps keep theirs")
    resume.add_argument("--restart-from", type=_step_number, metavar="STEP",
                        help="delete this step and later ones from the workdir and run them again")
    p.set_defaults(func=_run_local)

    p = sub.add_parser("compare", help="run selection strategies × seeds over a stream (default: the synthetic one)")
    p.add_argument("paths", nargs="*", help="LifelongRun + InstructionDataset YAMLs and/or folders (as run-local); "
                   "none: the demo stream")
    p.add_argument("-f", "--file", action="append", default=[], help="LifelongRun / InstructionDataset YAML")
    p.add_argument("--out", required=True, help="output folder (stream, runs, table.md/json, plots)")
    p.add_argument("--train-budget", type=int, help="override spec.trainBudget (T)")
    p.add_argument("--pool-budget", type=int, help="override spec.poolBudget (D)")
    p.add_argument("--steps", type=int, help="only the first N datasets")
    p.add_argument("--eval-samples", type=int, help="eval records per skill: the demo stream writes N, "
                   "any stream caps spec.eval.maxSamples at N")
    p.add_argument("--quick", action="store_true", help="the quick stream (tests, smoke runs)")
    p.add_argument("--seeds", type=seed_list, default=(0, 1, 2),
                   help="N: seeds 0..N-1 (default 3); or the seeds themselves, 'A-B' or 'A,B,…' "
                        "(e.g. 3-4 adds two seeds to a comparison of 0-2)")
    p.add_argument("--strategies", help="comma-separated; default: all; sequential is always added")
    p.add_argument("--jobs", type=int, help="parallel worker processes (default: CPU count)")
    p.add_argument("--modality", choices=("multimodal", "text"), default="multimodal")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_compare)

    p = sub.add_parser("compare-merge", help="one table from `compare` tables of the same stream over disjoint seeds")
    p.add_argument("tables", nargs="+", help="compare out folders (or their table.json files)")
    p.add_argument("--out", required=True, help="folder for the merged table.md / table.json")
    p.set_defaults(func=_compare_merge)

    add_stage(sub)
    add_pool(sub)
    add_models(sub)
    for command in sub.choices.values():  # `adaptinf run-local … -v` works as well as `adaptinf -v run-local …`
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="debug logging")
    return parser


def _redacted_traceback(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    """An error nobody caught still prints its traceback (it is a bug worth reporting), without a
    tracking URI's password or a token that its messages may quote (MLflow's do)."""
    import traceback

    from adaptinf.tracking.mlflow_tracker import redact_uri
    sys.stderr.write(redact_uri("".join(traceback.format_exception(kind, err, tb))) or "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the stage command re-launches itself with it (several training processes)
    from adaptinf import threads
    threads.quiet_waiting()  # before anything loads torch's OpenMP runtime
    if getattr(args, "threads", None):
        os.environ[threads.ENV] = str(args.threads)  # stages (and their subprocesses) read it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from adaptinf.quiet import quiet_libraries
    quiet_libraries()
    from adaptinf.spec import SpecError
    from adaptinf.tracking.mlflow_tracker import RedactingFilter, redact_uri
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    sys.excepthook = _redacted_traceback
    try:
        return args.func(args)
    except SpecError as err:
        print(f"error: {redact_uri(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `adaptinf pool show … | head`: the reader left; no traceback, and none at exit either
        # (Python flushes stdout again then).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
