"""How many CPU threads a stage process uses: what it really has, not what the node has.

torch sizes its pool from the node's core count. In a pod with a CPU limit, or on a shared
machine where this process may only run on some cores, that is too many: the extra threads
spin-wait on cores busy with other work (on a 2-core machine with other jobs running, the demo's
step-0 training took 1,162 s instead of 37 s). The default here is the smaller of the CPU quota
(cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, of the process's own cgroup
and its ancestors; rounded down, at least 1)
and the number of CPUs in the process's affinity mask. Overrides, strongest first: `--threads N`
(sets `ADAPTINF_THREADS`), `resources.<stage>.threads` (over `resources.default.threads`),
`OMP_NUM_THREADS`.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "ADAPTINF_THREADS"
CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_paths(controller: str | None, proc: Path) -> list[str]:
    """This process's cgroup path for `controller` (None: the v2 unified hierarchy) and each of
    its ancestors, deepest first, from /proc/self/cgroup; ["/"] when unknown."""
    text = _read(proc) or ""
    for line in text.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controller is None and controllers == "") or (controller in controllers.split(",")):
            parts = [p for p in path.split("/") if p]
            return ["/" + "/".join(parts[:n]) for n in range(len(parts), -1, -1)]
    return ["/"]


def _quota_v2(directory: Path) -> float | None:
    value = _read(directory / "cpu.max")
    if value is None:
        return None
    quota, _, period = value.partition(" ")
    return None if quota == "max" or not period else int(quota) / int(period)


def _quota_v1(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_quota(root: Path = CGROUP, proc: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota (e.g. 1.5), None when unlimited or unknown.

    The smallest quota on the way from this process's own cgroup up to the mount's root (a
    parent's limit bounds its children). In a container the mount's root is the container's
    cgroup; outside one (a systemd unit's CPUQuota, a batch job's cgroup) the process sits
    below it, and reading the root alone said "unlimited"."""
    found = []
    for path in _own_paths(None, proc):
        if (q := _quota_v2(root / path.lstrip("/"))) is not None:
            found.append(q)
    for path in _own_paths("cpu", proc):
        if (q := _quota_v1(root / "cpu" / path.lstrip("/"))) is not None:
            found.append(q)
    return min(found) if found else None


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_threads(root: Path = CGROUP, processes: int = 1, proc: Path = Path("/proc/self/cgroup")) -> int:
    """min(affinity, floor(quota)), shared among `processes` processes of one group, >= 1."""
    cpus = affinity_cpus()
    quota = cgroup_quota(root, proc)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus // max(1, processes))


def resolve(spec_threads: int | None = None, root: Path = CGROUP) -> tuple[int, str]:
    """(threads, where the number came from)."""
    env = os.environ.get(ENV)
    if env:
        if not env.isdigit() or int(env) < 1:
            from adaptinf.spec import SpecError
            raise SpecError(f"{ENV}={env!r}: expected a whole number of threads, at least 1")
        return int(env), ENV
    if spec_threads is not None:
        return spec_threads, "spec"
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:  # the standard knob, set on purpose
        return int(omp), "OMP_NUM_THREADS"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return default_threads(root, processes), "CPU quota and affinity"


def apply(spec_threads: int | None = None) -> int:
    """Size torch's intra-op pool for this process; returns the number used."""
    import torch
    n, source = resolve(spec_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.info("torch threads: %d (from %s)", n, source)
    return n


def positive(text: str) -> int:
    """argparse type of `--threads`."""
    import argparse
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, at least 1, got {text!r}")
    return int(text)


def quiet_waiting() -> None:
    """Before torch loads: idle OpenMP threads sleep instead of spinning on cores other work needs."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
