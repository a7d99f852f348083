"""A stand-in for `adaptinf stage` (docs/contracts.md §1) that runs in ~0.2 s: same argv, same
environment, same store markers and exit codes, no model.

It checks the contract it is given (argv, `ADAPTINF_*` env, the specs parse with the real
pydantic models) and writes each stage's commit marker with a plausible `summary`, the ingest
marker, `<run>/mlflow.json` and `<run>/summary.json`. Test hooks, in the store (a local one) or in
the folder env `FAKE_STAGE_HOOKS` names (an S3 store):

- `_calls.jsonl`: one line per invocation (stage, step, shard, pid, and the SHA-256 of the S3
  secret it received: proof of delivery that writes no credential anywhere) — to count executions;
- `_fail/<stage>-<step>`: if present, exit with the code written in it (default 1) — remove it
  and retry to recover;
- `_hold/<stage>-<step>`: while present, the stage waits (a test catches it mid-run for sure);
- `_crash/<stage>-<step>` (or `-shard-<i>` for one extract shard): holds a count N; while N > 0 an attempt decrements it, writes half of
  its output and SIGKILLs itself (an OOM kill mid-write; the Job sees exit code 137);
- env `FAKE_STAGE_SECONDS`: sleep this long first (to catch a stage mid-run).

Like the real stages it clears a stage's uncommitted leftovers before writing, reads its
predecessors only through their commit markers, keeps a pool manifest per step (`members`:
dataset/id of every kept record, the first D in arrival order), and with `MLFLOW_TRACKING_URI`
set opens the step's MLflow child run (cluster-select) and finishes it (prune) through the real
`adaptinf.tracking.Tracker`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from adaptinf import layout
from adaptinf.spec import InstructionDatasetSpec, LifelongRunSpec
from adaptinf.store import open_store

log = logging.getLogger("fake_stage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptinf")
    sub = parser.add_subparsers(dest="command", required=True)
    stage_p = sub.add_parser("stage")
    stage_p.add_argument("stage", choices=layout.STAGES)
    stage_p.add_argument("--run", required=True)
    stage_p.add_argument("--step", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fake-stage %(levelname)s %(message)s")

    env = os.environ
    if args.stage == "train" and int(env.get("ADAPTINF_TRAIN_PROCESSES", "1")) > 1:
        group = _process_group(args, int(env["ADAPTINF_TRAIN_PROCESSES"]))
        if group is not None:
            return group
    store = open_store(env["ADAPTINF_STORE"])
    spec = LifelongRunSpec.model_validate(json.loads(env["ADAPTINF_RUN_SPEC"]))
    dataset = env["ADAPTINF_DATASET"]
    ds_spec = InstructionDatasetSpec.model_validate(json.loads(env["ADAPTINF_DATASET_SPEC"]))
    shard, shards = int(env.get("JOB_COMPLETION_INDEX", "0")), int(env.get("ADAPTINF_SHARDS", "1"))
    run, step, stage = args.run, args.step, args.stage
    if stage == "extract" and shards != spec.extract.shards:
        log.error("ADAPTINF_SHARDS=%s but spec.extract.shards=%s", shards, spec.extract.shards)
        return 2

    calls = hook(store, "_calls.jsonl")
    calls.parent.mkdir(parents=True, exist_ok=True)
    with open(calls, "a", encoding="utf-8") as fh:  # O_APPEND: whole lines, even from parallel shards
        fh.write(json.dumps({"stage": stage, "step": step, "shard": shard, "dataset": dataset, "pid": os.getpid(),
                             "secret_sha256": _digest(env.get("AWS_SECRET_ACCESS_KEY")), "t": time.time()}) + "\n")
    time.sleep(float(env.get("FAKE_STAGE_SECONDS", "0")))
    hold = hook(store, f"_hold/{stage}-{step}")
    while hold.exists():
        time.sleep(0.05)
    fail = hook(store, f"_fail/{stage}-{step}")
    if fail.exists():
        code = int(fail.read_text().strip() or 1)
        log.error("injected failure of %s step %d: exit %d", stage, step, code)
        return code

    prefix = layout.shard_prefix(run, step, shard, shards) if stage == "extract" else layout.stage_prefix(run, step, stage)
    if store.is_committed(prefix):
        return 0  # idempotent, like the real stages
    store.clear(prefix)  # what a killed attempt left behind
    _maybe_crash(store, prefix, stage, step)
    previous = _previous_pool(store, run, step)
    if stage == "extract":
        lines = _records(ds_spec.source)
        uids = [f"{dataset}/{json.loads(line).get('id', i)}" for i, line in enumerate(lines) if "bad" not in line]
        accepted = len(uids)
        ingest = layout.stage_prefix(run, step, "ingest")
        store.write_json(f"{ingest}/report.json", {"accepted": accepted, "rejected": len(lines) - accepted})
        store.write_json(f"{ingest}/uids.json", uids)
        store.commit(ingest, {"summary": {"accepted": accepted, "rejected": len(lines) - accepted}})
        if not accepted:
            log.error("dataset %s has no usable record", dataset)
            return 2
        summary = {"pool_size": len(previous) + accepted, "samples": accepted // shards, "shard": [shard, shards]}
    elif stage == "cluster-select":
        accepted = store.read_marker(layout.stage_prefix(run, step, "ingest"))["summary"]["accepted"]
        child = _mlflow(store, spec, run, step, dataset, finish=False)
        if not store.exists(layout.tracking_key(run)):
            store.write_json(layout.tracking_key(run), {"parent_run_id": f"fake-{run}", "experiment_id": "0"})
        pool = len(previous) + accepted
        summary = {"pool_size": pool, "selected": min(spec.train_budget, pool), "k": 3,
                   "mlflow_run_id": child or f"fake-{run}-{step}"}
    elif stage == "train":
        summary = {"samples": spec.train_budget, "loss": round(1.0 / (step + 2), 4), "seconds": 0.1}
    elif stage == "eval":
        summary = {"skills": {"color": 0.9, "count": round(0.5 + 0.1 * step, 3)}, "avg_acc": round(0.7 + 0.05 * step, 4),
                   "forgetting_rate": round(1.5 * step, 2)}
    else:  # prune
        store.read_marker(layout.stage_prefix(run, step, "cluster-select"))  # refuses an unfinished one
        new = store.read_json(f"{layout.stage_prefix(run, step, 'ingest')}/uids.json")
        pool = previous + new
        members = pool[:spec.pool_budget or len(pool)]
        store.write_json(layout.pool_key(run, step), {"step": step, "size": len(members), "members": members})
        summary = {"pool_size": len(members), "pruned": len(pool) - len(members)}
        _write_summary(store, run, step, dataset, len(members))
        _mlflow(store, spec, run, step, dataset, finish=True)
    store.write_json(f"{prefix}/out.json", summary)
    store.commit(prefix, {"stage": stage, "step": step, "summary": summary})
    log.info("%s of %s step %d done: %s", stage, run, step, summary)
    return 0


def hook(store, key: str) -> Path:
    """Where a test hook (`_calls.jsonl`, `_hold/…`, `_fail/…`, `_crash/…`) lives: in the folder
    FAKE_STAGE_HOOKS names (needed with an S3 store), else in the local store itself."""
    if root := os.environ.get("FAKE_STAGE_HOOKS"):
        return Path(root) / key
    path = store.local_path(key)
    if path is None:
        raise SystemExit("fake_stage: a store without local paths (S3) needs FAKE_STAGE_HOOKS, a folder for the "
                         "test hooks")
    return path


def _digest(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value else None


def _records(source: str) -> list[str]:
    path = Path(source)
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else ["{}"] * 20


def _previous_pool(store, run: str, step: int) -> list[str]:
    for s in range(step - 1, -1, -1):
        if store.exists(layout.pool_key(run, s)):
            return store.read_json(layout.pool_key(run, s))["members"]
    return []


def _process_group(args: argparse.Namespace, processes: int) -> int | None:
    """Like the real train stage: the parent runs the group (the real `run_group`, each process
    this fake); each process, as the real stage's tracked_attempt does, handles SIGTERM, leaves a
    trace `_terminated/train-<step>-rank-<r>` in the store and exits 143. Rank 0 does the work;
    the others wait for the step's hold, if any. Returns None inside a process of the group."""
    from adaptinf.training import distributed

    if not distributed.in_launched_group():
        distributed.launch_argv = lambda stage_args: [sys.executable, os.path.abspath(__file__), *stage_args]
        return distributed.run_group(processes, sys.argv[1:])
    store, rank = open_store(os.environ["ADAPTINF_STORE"]), os.environ.get("RANK", "0")

    def terminated(signum: int, frame: object) -> None:
        trace = hook(store, f"_terminated/train-{args.step}-rank-{rank}")
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.touch()
        log.error("rank %s: SIGTERM, exiting 143", rank)
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminated)
    if rank == "0":
        return None
    while hook(store, f"_hold/train-{args.step}").exists():
        time.sleep(0.05)
    raise SystemExit(0)


def _maybe_crash(store, prefix: str, stage: str, step: int) -> None:
    shard = os.environ.get("JOB_COMPLETION_INDEX")
    counter = hook(store, f"_crash/{stage}-{step}")
    if shard is not None and hook(store, f"_crash/{stage}-{step}-shard-{shard}").exists():
        counter = hook(store, f"_crash/{stage}-{step}-shard-{shard}")  # one shard's own count
    if not counter.exists() or int(counter.read_text() or 0) <= 0:
        return
    counter.write_text(str(int(counter.read_text()) - 1))
    out = store.local_path(f"{prefix}/out.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:  # half an output, never committed
        fh.write('{"half": ')
        fh.flush()
        log.error("injected SIGKILL of %s step %d mid-write", stage, step)
        os.kill(os.getpid(), signal.SIGKILL)


def _mlflow(store, spec, run: str, step: int, dataset: str, finish: bool) -> str | None:
    """The step's child run through the real Tracker (only when a tracking URI is set)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    from adaptinf.tracking import Tracker
    tracker = Tracker(uri, spec.mlflow.experiment, run, store)
    tracker.parent_id(params=spec.to_dict())  # what the real cluster-select logs
    child = tracker.step_id(step, dataset)
    if finish:
        tracker.finish(child)
    return child


def _write_summary(store, run: str, step: int, dataset: str, pool: int) -> None:
    key = layout.summary_key(run)
    summary = store.read_json(key) if store.exists(key) else {"run": run, "strategy": "fake", "steps": []}
    ev = store.read_marker(layout.stage_prefix(run, step, "eval"))["summary"]
    sel = store.read_marker(layout.stage_prefix(run, step, "cluster-select"))["summary"]
    summary["steps"] = [s for s in summary["steps"] if s["step"] != step] + [{
        "step": step, "dataset": dataset, "pool_size": pool, "selected": sel["selected"], "k": sel["k"],
        "skills": ev["skills"], "avg_acc": ev["avg_acc"], "forgetting_rate": ev["forgetting_rate"], "seconds": {}}]
    summary["final"] = {"avg_acc": ev["avg_acc"], "forgetting_rate": ev["forgetting_rate"]}
    store.write_json(key, summary)


if __name__ == "__main__":
    sys.exit(main())
