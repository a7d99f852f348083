"""The run's state machine, as a pure function from what exists to what to do next.

Level-based: `plan(observation)` looks only at what is there now — the run's datasets, its stage
Jobs, the store's commit markers — never at what happened before. After a restart it therefore
continues from where things are: a stage whose Job succeeded, or whose outputs are committed
and whose Job (if any) has ended, is never run again, and a Job that exists is never created
twice (names are deterministic too).

Steps: a dataset's step is fixed once its first Job exists (the Job's labels and the dataset's
status record it). Datasets still waiting are ordered by `spec.order` (unset last), then
creation time, then name, and take the steps after the last fixed one — so datasets applied
together are ordered by `order`, and one that arrives late never renumbers a step that started.
"Together" is what the arrival window says: a new step starts only once no dataset of the run has
arrived for `arrival_window` seconds, since `kubectl apply -f datasets/` creates one object after
the other and a pass can fall between two of them.

Within a step the stages run one after the other (extract → cluster-select → train → eval →
prune). A suspended run stops its running stage (the Job is deleted, which frees its GPUs; the
stage starts over on resume) unless its outputs are already committed. A Job whose
`spec.suspend` is true waits for a queue (Kueue) to admit it: the run is Queued, not Running.
A failed Job stops the run (phase Failed) until the retry annotation names its step —
except an extract that failed because the dataset had no usable record: that step is skipped
(the dataset is Failed with reason NoUsableRecords) and the run goes on with the next dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from adaptinf.layout import STAGES

ACTIVE, SUCCEEDED, FAILED = "active", "succeeded", "failed"


@dataclass(frozen=True)
class DatasetView:
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text)
    order: int | None = None
    step: int | None = None  # fixed step, from the dataset's status (when it names this run)
    outcome: str | None = None  # "Succeeded" or "NoUsableRecords" once its status says so: trusted
    age: float | None = None  # seconds since it arrived, as far as the operator can tell (None: long ago)


@dataclass(frozen=True)
class JobView:
    name: str
    step: int
    stage: str
    dataset: str
    state: str  # ACTIVE | SUCCEEDED | FAILED
    reason: str = ""
    message: str = ""
    pending_for: float | None = None  # seconds the oldest Pending pod has waited
    reported: bool = False  # its success/failure Event was already posted
    detail: str = ""  # why its last pod failed: exit code, reason, last log line
    refused: str = ""  # an active Job with no pod: why the API server refuses its pods (FailedCreate)
    suspended: bool = False  # spec.suspend: not admitted by its queue (yet), so no pods
    ran_for: float | None = None  # an ended Job: seconds from its start to its end (metrics only)


@dataclass(frozen=True)
class Observation:
    run: str
    datasets: tuple[DatasetView, ...]
    jobs: tuple[JobView, ...]
    committed: frozenset[tuple[int, str]] = frozenset()  # (step, stage) sealed in the store
    unusable_steps: frozenset[int] = frozenset()  # ingest found no usable record
    suspended: bool = False
    retry_step: int | None = None  # the retry annotation, when set
    pending_timeout: float = 1800.0
    next_step: int = 0  # the run's status.nextStep: steps below it were taken, even if nothing of them is left
    arrival_window: float = 0.0  # a new step starts only once no dataset has arrived for this long


@dataclass(frozen=True)
class CreateJob:
    step: int
    stage: str
    dataset: str


@dataclass(frozen=True)
class DeleteJob:
    job: JobView


@dataclass(frozen=True)
class StopJob:
    """The run was suspended while this Job ran: delete it to free what it holds."""
    job: JobView


@dataclass(frozen=True)
class ReportJob:
    job: JobView


@dataclass(frozen=True)
class ClearRetry:
    used: bool  # False: the annotation named no failed step


Action = CreateJob | DeleteJob | StopJob | ReportJob | ClearRetry


@dataclass(frozen=True)
class Failure:
    step: int
    stage: str
    dataset: str
    reason: str
    message: str
    job: str = ""  # the failed Job's name (it may be gone by now: TTL, manual deletion)


@dataclass(frozen=True)
class DatasetState:
    phase: str  # Queued | Running | Succeeded | Failed
    step: int | None = None
    stage: str | None = None
    reason: str = ""
    message: str = ""


@dataclass
class Plan:
    phase: str = "Pending"  # Pending | Queued | Running | Succeeded | Suspended | Failed
    step: int | None = None
    stage: str | None = None
    dataset: str | None = None
    steps_completed: int = 0
    active_job: str | None = None
    failure: Failure | None = None
    stuck: str | None = None  # why a stage pod is stuck Pending, or cannot be created at all
    stuck_reason: str = "Unschedulable"  # | PodsRefused | JobRefused
    next_step: int = 0  # the first step number no dataset has taken (status.nextStep)
    awaiting_arrivals: float | None = None  # seconds until the next step may start (datasets still arriving)
    actions: list[Action] = field(default_factory=list)
    datasets: dict[str, DatasetState] = field(default_factory=dict)


def arrival_key(ds: DatasetView) -> tuple:
    return (ds.order is None, ds.order or 0, ds.created, ds.name)


def schedule(obs: Observation) -> list[tuple[int, DatasetView]]:
    """(step, dataset) in step order: fixed steps first, then the queue."""
    by_name = {d.name: d for d in obs.datasets}
    fixed: dict[str, int] = {}
    for job in sorted(obs.jobs, key=lambda j: j.step):  # Jobs are the hard evidence
        fixed.setdefault(job.dataset, job.step)
    for ds in obs.datasets:
        if ds.step is not None:
            fixed.setdefault(ds.name, ds.step)
    taken = sorted((step, by_name[name]) for name, step in fixed.items() if name in by_name)
    # A step whose Jobs are gone (TTL) and whose dataset was deleted left no trace here but its
    # markers in the store: never hand its number to another dataset (it would count as done).
    nxt = max(max(fixed.values(), default=-1) + 1, obs.next_step)
    queue = sorted((d for d in obs.datasets if d.name not in fixed), key=arrival_key)
    return [(s, d) for s, d in taken] + [(nxt + i, d) for i, d in enumerate(queue)]


def arrival_wait(obs: Observation, queue: list[tuple[int, DatasetView]]) -> float:
    """Seconds until the queue has been quiet for `arrival_window`: `kubectl apply -f datasets/`
    creates its objects one after the other, and a pass between two of them must not start the
    first one seen when a later one has the lower `spec.order`."""
    ages = [d.age for _, d in queue if d.age is not None]
    if not ages or obs.arrival_window <= 0:
        return 0.0
    return min(obs.arrival_window, max(0.0, obs.arrival_window - min(ages)))


def plan(obs: Observation) -> Plan:
    out = Plan()
    steps = schedule(obs)
    retry_used = False
    current: int | None = None  # index into `steps` where the run stopped
    for i, (step, ds) in enumerate(steps):
        jobs = {j.stage: j for j in obs.jobs if j.step == step}
        out.actions += [ReportJob(j) for j in jobs.values() if j.state != ACTIVE and not j.reported]
        if ds.outcome == "Succeeded":
            done = set(STAGES)
        else:
            # A committed stage whose Job still runs is not done yet: its pod finishes after the
            # marker (prune rewrites summary.json and closes the MLflow child run), and the next
            # stage must not start, nor the run count as up to date, before it exits.
            done = {s for s in STAGES if (s in jobs and jobs[s].state == SUCCEEDED)
                    or ((step, s) in obs.committed and (s not in jobs or jobs[s].state != ACTIVE))}
        out.step, out.dataset = step, ds.name
        if len(done) == len(STAGES):
            out.datasets[ds.name] = DatasetState("Succeeded", step, STAGES[-1], "StepSucceeded",
                                                 f"step {step} of run {obs.run} finished")
            out.steps_completed += 1
            out.stage = STAGES[-1]
            continue
        stage = next(s for s in STAGES if s not in done)
        job = jobs.get(stage)
        out.stage = stage
        failed = job is not None and job.state == FAILED
        if failed and obs.retry_step == step:
            out.actions += [DeleteJob(job), ClearRetry(used=True)]
            retry_used = True
            out.phase = "Running"
            out.datasets[ds.name] = DatasetState("Running", step, stage, "Retrying",
                                                 f"retrying {stage} (Job {job.name} deleted)")
            current = i
            break
        if ds.outcome == "NoUsableRecords" or (failed and stage == "extract" and step in obs.unusable_steps):
            out.datasets[ds.name] = DatasetState(
                "Failed", step, stage, "NoUsableRecords",
                f"no usable record in {ds.name}: step {step} skipped; see the step's ingest/report.json")
            continue
        if failed:
            out.failure = Failure(step, stage, ds.name, job.reason or "JobFailed", job.message, job.name)
            out.phase = "Failed"
            out.datasets[ds.name] = DatasetState("Failed", step, stage, "StageFailed",
                                                 f"{stage} failed: {job.reason}: {job.message}")
            current = i
            break
        if job is not None and job.state == ACTIVE and obs.suspended and (step, stage) not in obs.committed:
            out.actions.append(StopJob(job))
            out.phase = "Suspended"
            out.datasets[ds.name] = DatasetState("Running", step, stage, "Suspended",
                                                 f"run {obs.run} is suspended: {stage} stopped; it runs again on resume")
            current = i
            break
        if job is not None and job.state == ACTIVE and job.suspended:
            out.phase = "Queued"
            out.active_job = job.name
            out.datasets[ds.name] = DatasetState("Queued", step, stage, "AwaitingAdmission",
                                                 f"{stage}: Job {job.name} waits for its queue to admit it")
            current = i
            break
        if job is not None and job.state == ACTIVE:
            out.phase = "Running"
            out.active_job = job.name
            if job.refused:  # no pod at all: nothing to wait for, say why at once
                out.stuck_reason = "PodsRefused"
                out.stuck = (f"Job {job.name} ({stage}, step {step}) cannot create its pod: {job.refused}. "
                             "Fix the cause (ResourceQuota, ServiceAccount, LimitRange, admission policy); "
                             "the Job controller keeps trying")
            elif job.pending_for is not None and job.pending_for > obs.pending_timeout:
                out.stuck = (f"a pod of Job {job.name} ({stage}, step {step}) has been Pending for "
                             f"{job.pending_for:.0f}s (> {obs.pending_timeout:.0f}s); check its events "
                             "(unschedulable: GPUs, nodeSelector, tolerations, quota)")
            out.datasets[ds.name] = DatasetState("Running", step, stage, "StageRunning", f"{stage} running")
            current = i
            break
        # A dataset whose step is fixed keeps it, also when its stopped Job is gone.
        started = bool(done) or bool(jobs) or ds.step is not None
        if obs.suspended:
            out.phase = "Suspended"
            out.datasets[ds.name] = DatasetState("Running" if started else "Queued", step if started else None,
                                                 stage, "Suspended", f"run {obs.run} is suspended before {stage}")
            current = i
            break
        # Not started: this dataset and every later one are the queue (fixed steps come first).
        if not started and (wait := arrival_wait(obs, steps[i:])) > 0:
            out.phase = "Running"
            out.awaiting_arrivals = wait
            out.datasets[ds.name] = DatasetState("Queued", None, None, "AwaitingArrivals",
                                                 "next: starts once no further dataset arrives for a moment")
            current = i
            break
        out.actions.append(CreateJob(step, stage, ds.name))
        out.phase = "Running"
        # The same words as once its Job runs: one status write per stage, not two.
        out.datasets[ds.name] = DatasetState("Running", step, stage, "StageRunning", f"{stage} running")
        current = i
        break
    else:
        out.phase = "Succeeded" if steps else "Pending"
    for _step, ds in steps[current + 1:] if current is not None else []:
        # Stable text: naming the current step would rewrite every queued dataset at every step.
        out.datasets[ds.name] = DatasetState("Queued", None, None, "Queued",
                                             f"queued: waits for the earlier datasets of run {obs.run}")
    taken = [s for s, d in steps if s < obs.next_step or d.step is not None or any(j.step == s for j in obs.jobs)]
    taken += [a.step for a in out.actions if isinstance(a, CreateJob)]
    out.next_step = max([obs.next_step, *(s + 1 for s in taken)])
    if obs.retry_step is not None and not retry_used:
        out.actions.append(ClearRetry(used=False))
    return out
