"""`adaptinf stage <name> --run R --step T`: one stage of one step, as a Job's pod runs it.

Specs come from `-f` YAML files (the files users `kubectl apply`), else from the environment
the operator sets (docs/contracts.md §1), else from the step's `inputs.json` snapshot.
Exit codes: 0 done (or already done), 2 bad input a retry cannot fix (an invalid spec, no usable
record, a permanent store error such as access denied or a missing bucket), 1 anything else (a
crash, or a store that stayed unreachable through every retry: the Job tries again later).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from pydantic import ValidationError

from adaptinf.layout import STAGES
from adaptinf.spec import LifelongRunSpec, SpecError, load_resources
from adaptinf.store import StoreError, StoreUnavailable, open_store

EXIT_BAD_INPUT = 2
log = logging.getLogger("adaptinf.stage")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage", help="run one stage of one step (what the Kubernetes Jobs execute)")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--run", help="LifelongRun name (default: from -f)")
    p.add_argument("--step", type=int, required=True, help="step number t (0-based)")
    p.add_argument("-f", "--file", action="append", default=[], help="LifelongRun / InstructionDataset YAML")
    p.add_argument("--store", help="artifact store: local dir or s3://bucket/prefix (env ADAPTINF_STORE)")
    p.add_argument("--shard-index", type=int, help="extract shard (env JOB_COMPLETION_INDEX)")
    p.add_argument("--shards", type=int, help="extract shard count (env ADAPTINF_SHARDS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=_threads, help="CPU threads (default: the CPU quota and affinity this "
                                                    "process has; env ADAPTINF_THREADS, spec resources.<stage>.threads)")
    p.add_argument("--processes", type=int,
                   help="train only: local training processes, one per GPU (env ADAPTINF_TRAIN_PROCESSES)")
    p.set_defaults(func=main)


def _threads(text: str) -> int:
    from adaptinf.threads import positive
    return positive(text)


def _specs(args: argparse.Namespace) -> tuple[str | None, dict | None, str | None, dict | None]:
    """(run name, run spec, dataset name, dataset spec) from -f files or the environment."""
    run = ds = run_spec = ds_spec = None
    for path in args.file:
        for res in load_resources(path):
            if res.kind == "LifelongRun":
                run, run_spec = res.name, res.resolved_spec().to_dict()
            else:
                ds, ds_spec = res.name, res.resolved_spec().to_dict()
    env = os.environ
    if run_spec is None and env.get("ADAPTINF_RUN_SPEC"):
        run_spec = _json_env("ADAPTINF_RUN_SPEC")
    if ds_spec is None and env.get("ADAPTINF_DATASET_SPEC"):
        ds, ds_spec = env.get("ADAPTINF_DATASET"), _json_env("ADAPTINF_DATASET_SPEC")
    return args.run or run, run_spec, ds, ds_spec


def _json_env(name: str) -> dict[str, Any]:
    try:
        return json.loads(os.environ[name])
    except json.JSONDecodeError as err:
        raise SpecError(f"environment variable {name} is not valid JSON: {err}") from None


def _store_must_exist(uri: str, stage: str, step: int) -> None:
    """Only step 0 of a run creates a local store: for a later step a missing directory is a
    typo, and creating it would hide that behind "no inputs.json"."""
    from pathlib import Path
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" in local or step == 0 or Path(local).expanduser().is_dir():
        return
    raise SpecError(f"store {uri} does not exist (only step 0 starts a new store); check --store / ADAPTINF_STORE")


def _relaunch(args: argparse.Namespace) -> int | None:
    """Train with N > 1 processes: run this very command as a process group; None = run here."""
    from adaptinf.training import distributed
    processes = args.processes or int(os.environ.get(distributed.PROCESSES_ENV) or 1)
    if args.stage != "train" or processes < 2 or distributed.in_launched_group():
        return None
    argv = getattr(args, "argv", None) or sys.argv[1:]
    log.info("train: a group of %d processes running %s", processes, argv)
    return distributed.run_group(processes, argv)


def main(args: argparse.Namespace) -> int:
    from adaptinf.stages.registry import StageError, build_context, stage_function
    from adaptinf.stages.tracking_guard import tracked_attempt
    relaunched = _relaunch(args)
    if relaunched is not None:
        return relaunched
    try:
        run, run_spec, dataset, ds_spec = _specs(args)
        if not run:
            raise SpecError("no run name: give --run or a LifelongRun file with -f")
        spec = LifelongRunSpec.model_validate(run_spec) if run_spec is not None else None
        if spec is not None and args.stage in ("extract", "eval"):  # before any compute or snapshot
            from adaptinf.runner.preflight import eval_problems
            if problems := eval_problems(spec):
                raise SpecError("; ".join(problems))
        store_uri = args.store or os.environ.get("ADAPTINF_STORE") or (spec.storage.uri if spec else None)
        if not store_uri:
            raise SpecError("no artifact store: give --store, ADAPTINF_STORE or spec.storage.uri")
        shards = args.shards or int(os.environ.get("ADAPTINF_SHARDS") or 0) or (spec.extract.shards if spec else None)
        index = args.shard_index if args.shard_index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", 0))
        _store_must_exist(store_uri, args.stage, args.step)
        ctx = build_context(run, args.step, open_store(store_uri), run_spec, dataset, ds_spec,
                            shard_index=index if args.stage == "extract" else 0,
                            shard_count=(shards or 1) if args.stage == "extract" else 1,
                            progress=not args.no_progress and sys.stderr.isatty())
        if not 0 <= ctx.shard_index < ctx.shard_count:
            raise SpecError(f"shard index {ctx.shard_index} is outside 0..{ctx.shard_count - 1}")
        from adaptinf import progress
        with tracked_attempt(ctx, args.stage), progress.labelled(args.step, args.stage):  # a crash or SIGTERM is recorded in MLflow
            summary = stage_function(args.stage)(ctx)
    except (SpecError, StageError, ValidationError) as err:  # an invalid spec: retrying cannot help
        log.error("%s failed: %s", args.stage, err)
        return EXIT_BAD_INPUT
    except StoreUnavailable as err:
        log.error("%s failed: the artifact store is unavailable (the Job retries): %s", args.stage, err)
        return 1
    except StoreError as err:
        log.error("%s failed on the artifact store (a retry cannot fix this): %s", args.stage, err)
        return EXIT_BAD_INPUT
    print(json.dumps({"stage": args.stage, "step": args.step, "summary": summary}, default=str))
    return 0
