"""Several training processes in one pod (one per GPU), as the train stage uses them.

The Job's command stays `adaptinf stage train …` (docs/contracts.md §1); with more than one
process requested (`--processes N` / ADAPTINF_TRAIN_PROCESSES, set by the operator from the
stage's GPU count) the stage re-runs its own command as a local process group with torchrun's
environment, which accelerate picks up (NCCL on GPUs, gloo on CPU). Every
process trains on its shard of the batches; only the main process writes to the store and
MLflow, and the others wait for it at a barrier so nobody reads an artifact before it exists.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from functools import lru_cache

PROCESSES_ENV = "ADAPTINF_TRAIN_PROCESSES"
SIGTERM_EXIT = 128 + signal.SIGTERM  # what a pod stopped by SIGTERM exits with


def in_launched_group() -> bool:
    """True inside a torchrun-launched process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_argv(stage_args: list[str]) -> list[str]:
    """The command each process of the group runs: this very `adaptinf` command."""
    return [sys.executable, "-m", "adaptinf.cli", *stage_args]


def _rendezvous_store():
    """The group's rendezvous store, hosted by this parent on a port the OS picks and it keeps
    (torchrun's "agent store"): no free-port-then-bind window in which another program could
    take the port before rank 0 binds it."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    return TCPStore("127.0.0.1", 0, None, is_master=True, timeout=timedelta(minutes=30),
                    wait_for_workers=False)


def run_group(processes: int, stage_args: list[str]) -> int:
    """Run `adaptinf <stage_args>` as a local process group of `processes` (what torchrun
    --standalone sets up: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). torchrun itself is
    not used because its argument parser swallows stage flags such as `--run`.

    Returns 0 if every process succeeded, else the first failure's exit code (so exit code 2,
    bad input, still reaches the Job); the others are stopped then. A SIGTERM to this parent is
    passed on to the group, and the group's end is then reported as 143.
    """
    if processes < 2:
        raise ValueError(f"a process group needs at least 2 processes, got {processes}")
    store = _rendezvous_store()
    base = {**os.environ, "WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
            "TORCHELASTIC_USE_AGENT_STORE": "True"}
    procs: list[subprocess.Popen] = []
    stopped: list[int] = []

    def forward(signum: int, frame: object) -> None:
        # This parent is the container's PID 1: without a handler SIGTERM (pod deletion, eviction,
        # activeDeadlineSeconds) would be ignored and the pod SIGKILLed after its grace period. The
        # processes get it instead, mark MLflow KILLED, and the pod exits 143.
        stopped.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if main_thread else None
    try:
        for r in range(processes):  # spawned after the handler: their own SIGTERM stays the default
            procs.append(subprocess.Popen(launch_argv(stage_args), env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}))
            if stopped:
                forward(stopped[0], None)
        failed = _wait_all(list(procs))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return SIGTERM_EXIT if stopped else failed


KILL_AFTER_S = 30.0   # a rank still alive this long after SIGTERM is killed


def _wait_all(procs: list[subprocess.Popen]) -> int:
    failed, stopped_at = 0, None
    while procs:
        for p in list(procs):
            code = p.poll()
            if code is None:
                continue
            procs.remove(p)
            if code and not failed:
                failed, stopped_at = code, time.monotonic()
                for other in procs:   # a dead peer would leave the others hanging in a collective
                    other.terminate()
        if procs and stopped_at is not None and time.monotonic() - stopped_at > KILL_AFTER_S:
            for other in procs:       # e.g. stuck in NCCL's teardown of an unfinished collective
                other.kill()
            stopped_at = None
        time.sleep(0.2)
    return failed


@lru_cache(maxsize=1)
def _state():
    import torch
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())
    # A process that exits with its group alive can abort in interpreter teardown (gloo's worker
    # threads still hold tensors; "terminate called without an active exception", exit -6).
    atexit.register(_end_group)
    return state


def _end_group() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """The process that writes artifacts; always True outside a process group."""
    return not in_launched_group() or _state().is_main_process


def barrier() -> None:
    """Wait for every process of the group (a no-op for a single process)."""
    if in_launched_group():
        _state().wait_for_everyone()


def from_main(obj):
    """The main process's `obj` on every process (itself outside a process group). For a choice
    each process computes for itself from its own forward pass: float noise could make two
    processes choose differently, and data of different lengths would hang the collectives."""
    if not in_launched_group():
        return obj
    from accelerate.utils import broadcast_object_list
    _state()
    return broadcast_object_list([obj], from_process=0)[0]
