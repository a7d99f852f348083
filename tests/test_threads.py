"""Stage processes size torch's thread pool from the CPUs they really have (cgroup quota,
affinity), not from the node's core count; the spec and the CLI override it."""
from __future__ import annotations

import os

import pytest
import torch

from adaptinf import threads
from adaptinf.spec import LifelongRunSpec, SpecError
from adaptinf.stages.runtime import run_idempotent
from adaptinf.store import LocalStore


@pytest.fixture
def no_overrides(monkeypatch):
    for name in (threads.ENV, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def test_the_cpu_quota_and_the_affinity_bound_the_default(tmp_path, no_overrides):
    no_overrides.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))  # a big node
    assert threads.default_threads(cgroup(tmp_path / "a", v2="150000 100000")) == 1     # a pod limit of 1.5 CPU
    assert threads.default_threads(cgroup(tmp_path / "b", v2="400000 100000")) == 4
    assert threads.default_threads(cgroup(tmp_path / "c", v2="50000 100000")) == 1      # never 0
    assert threads.default_threads(cgroup(tmp_path / "d", v1=("200000", "100000"))) == 2
    assert threads.default_threads(cgroup(tmp_path / "e", v1=("-1", "100000"))) == 64   # v1 unlimited
    assert threads.default_threads(cgroup(tmp_path / "f", v2="max 100000")) == 64
    no_overrides.setattr(os, "sched_getaffinity", lambda pid: {3})  # pinned to one core (taskset)
    assert threads.default_threads(cgroup(tmp_path / "g", v2="max 100000")) == 1
    no_overrides.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert threads.default_threads(cgroup(tmp_path / "h", v2="max 100000"), processes=4) == 2  # a training group


def test_the_quota_of_the_process_own_cgroup_and_its_parents_counts(tmp_path, no_overrides):
    """Outside a container (a systemd unit's CPUQuota, a batch job) the process's cgroup sits
    below the mount's root; before, only the root was read, which said "unlimited"."""
    no_overrides.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    v1 = cgroup(tmp_path / "v1", v1=("-1", "100000"))
    job = v1 / "cpu" / "slurm" / "job7"
    job.mkdir(parents=True)
    (job / "cpu.cfs_quota_us").write_text("300000")
    (job / "cpu.cfs_period_us").write_text("100000")
    (v1 / "cpu" / "slurm" / "cpu.cfs_quota_us").write_text("200000")   # the parent's limit bounds the job
    (v1 / "cpu" / "slurm" / "cpu.cfs_period_us").write_text("100000")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/slurm/job7\n1:cpu,cpuacct:/slurm/job7\n0::/\n")
    assert threads.default_threads(v1, proc=proc) == 2
    proc.write_text("1:cpu,cpuacct:/docker/abc\n")   # a container's view: its cgroup is the mount's root
    assert threads.default_threads(v1, proc=proc) == 16
    v2 = cgroup(tmp_path / "v2", v2="max 100000")
    (v2 / "system.slice" / "job.service").mkdir(parents=True)
    (v2 / "system.slice" / "job.service" / "cpu.max").write_text("150000 100000\n")
    proc.write_text("0::/system.slice/job.service\n")
    assert threads.default_threads(v2, proc=proc) == 1
    assert threads.cgroup_quota(v2, tmp_path / "no-such-proc-file") is None  # root only: unlimited


def test_overrides_strongest_first(tmp_path, no_overrides):
    root = cgroup(tmp_path, v2="100000 100000")
    assert threads.resolve(None, root) == (1, "CPU quota and affinity")
    no_overrides.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve(None, root) == (3, "OMP_NUM_THREADS")
    assert threads.resolve(5, root) == (5, "spec")
    no_overrides.setenv(threads.ENV, "2")
    assert threads.resolve(5, root) == (2, threads.ENV)
    no_overrides.setenv(threads.ENV, "lots")
    with pytest.raises(SpecError, match="ADAPTINF_THREADS='lots'"):
        threads.resolve(None, root)


class _Ctx:
    """Just what run_idempotent reads."""
    def __init__(self, store, spec):
        self.store, self.spec, self.run, self.step, self.shard_index, self.shard_count = store, spec, "r", 0, 0, 1

    def prefix(self, stage):
        return f"r/steps/0000/{stage}"


def test_a_stage_runs_with_the_resolved_threads(tmp_path, no_overrides):
    """Before, a stage ran with whatever torch guessed from the node (os.cpu_count())."""
    spec = LifelongRunSpec.model_validate({"model": {"base": "m"}, "trainBudget": 1, "storage": {"uri": "x"},
                                           "resources": {"default": {"threads": 3}, "train": {"threads": 2}}})
    seen = {}

    def body(ctx, prefix):
        seen[prefix] = torch.get_num_threads()
        return {}

    ctx = _Ctx(LocalStore(tmp_path), spec)
    run_idempotent("train", ctx, body)
    run_idempotent("eval", ctx, body)
    assert seen == {"r/steps/0000/train": 2, "r/steps/0000/eval": 3}
    no_overrides.setenv(threads.ENV, "1")  # what `--threads 1` sets
    run_idempotent("prune", ctx, body)
    assert seen["r/steps/0000/prune"] == 1


def test_threads_flag_is_validated(capsys):
    from adaptinf.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run-local", "x", "--threads", "0"])
    assert "at least 1" in capsys.readouterr().err
    assert build_parser().parse_args(["stage", "train", "--step", "0", "--threads", "2"]).threads == 2
