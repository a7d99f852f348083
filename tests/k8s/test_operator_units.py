"""Known-answer tests of the operator's pure parts: config, Job manifests, the step machine, status."""
from __future__ import annotations

import json

import pytest

from adaptinf.layout import STAGES
from adaptinf.operator import status as st
from adaptinf.operator.config import ConfigError, OperatorConfig
from adaptinf.operator.jobs import CONTAINER, RUN_LABEL, STAGE_LABEL, STEP_LABEL, build_job, job_name
from adaptinf.operator.reconcile import dataset_view, job_view
from adaptinf.operator.steps import (ACTIVE, FAILED, SUCCEEDED, ClearRetry, CreateJob, DatasetView, DeleteJob, JobView,
                                     Observation, ReportJob, StopJob, plan, schedule)

RUN = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun",
       "metadata": {"name": "demo", "namespace": "ml", "uid": "run-uid", "labels": {"team": "vision"}},
       "spec": {"model": {"base": "llava-hf/llava-1.5-7b-hf"}, "trainBudget": 100,
                "storage": {"uri": "s3://bucket/runs"}, "extract": {"shards": 4},
                "resources": {"default": {"gpus": 1, "memory": "16Gi", "nodeSelector": {"pool": "gpu"}},
                              "train": {"gpus": 4, "cpu": 8, "backoffLimit": 0,
                                        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}}
DATASET = {"metadata": {"name": "ds-0", "namespace": "ml"}, "spec": {"run": "demo", "source": "s3://bucket/d0.jsonl"}}


# -- config --------------------------------------------------------------------------------

def test_config_defaults_follow_the_contract() -> None:
    cfg = OperatorConfig.from_env({})
    assert (cfg.stage_image, cfg.image_pull_policy, cfg.gpu_resource) == (
        "ghcr.io/adaptinf/adaptinf-stage:0.1.0", "IfNotPresent", "nvidia.com/gpu")
    assert (cfg.default_gpus, cfg.backoff_limit, cfg.active_deadline, cfg.pending_timeout) == (1, 2, 86400, 1800.0)
    assert cfg.arrival_window == 5.0 and OperatorConfig.from_env({"ADAPTINF_ARRIVAL_WINDOW": "0"}).arrival_window == 0
    assert cfg.node_selector == {} and cfg.tolerations == [] and cfg.ttl_after_finished is None


def test_config_parses_and_names_bad_variables() -> None:
    cfg = OperatorConfig.from_env({"ADAPTINF_NODE_SELECTOR": '{"pool": "gpu"}', "ADAPTINF_TOLERATIONS": "[]",
                                   "ADAPTINF_TTL_AFTER_FINISHED": "0", "ADAPTINF_PENDING_TIMEOUT": "2.5"})
    assert cfg.node_selector == {"pool": "gpu"} and cfg.ttl_after_finished == 0 and cfg.pending_timeout == 2.5
    for env, name in (({"ADAPTINF_DEFAULT_GPUS": "two"}, "ADAPTINF_DEFAULT_GPUS"),
                      ({"ADAPTINF_BACKOFF_LIMIT": "-1"}, "ADAPTINF_BACKOFF_LIMIT"),
                      ({"ADAPTINF_NODE_SELECTOR": "[1]"}, "ADAPTINF_NODE_SELECTOR"),
                      ({"ADAPTINF_TOLERATIONS": "{"}, "ADAPTINF_TOLERATIONS")):
        with pytest.raises(ConfigError, match=name):
            OperatorConfig.from_env(env)


# -- Job manifests ---------------------------------------------------------------------------

def test_job_names_are_deterministic_and_short() -> None:
    assert job_name("demo", 3, "cluster-select") == "demo-s3-cluster-select"
    long = job_name("r" * 60, 12, "cluster-select")
    assert len(long) <= 63 and long == job_name("r" * 60, 12, "cluster-select")
    assert long != job_name("r" * 60, 13, "cluster-select") and long != job_name("r" * 61, 12, "cluster-select")


def test_train_job_manifest() -> None:
    cfg = OperatorConfig.from_env({"ADAPTINF_S3_SECRET": "s3-creds", "ADAPTINF_S3_ENDPOINT": "http://minio:9000",
                                   "ADAPTINF_MLFLOW_URI": "http://mlflow:5000", "ADAPTINF_MLFLOW_SECRET": "mlf",
                                   "ADAPTINF_SERVICE_ACCOUNT": "stage-sa", "ADAPTINF_TTL_AFTER_FINISHED": "600",
                                   "ADAPTINF_TOLERATIONS": '[{"key": "spot", "operator": "Exists"}]'})
    job = build_job(RUN, 2, "train", DATASET, cfg)
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "demo-s2-train" and meta["namespace"] == "ml"
    assert meta["labels"][RUN_LABEL] == "demo" and meta["labels"][STEP_LABEL] == "2" and meta["labels"][STAGE_LABEL] == "train"
    assert meta["labels"]["team"] == "vision"  # the run's own labels travel (kopf.adopt)
    (owner,) = meta["ownerReferences"]
    assert owner == {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "name": "demo", "uid": "run-uid",
                     "controller": True, "blockOwnerDeletion": True}
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 86400 and spec["ttlSecondsAfterFinished"] == 600
    disrupted, bad_input = spec["podFailurePolicy"]["rules"]
    assert disrupted == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert bad_input["action"] == "FailJob" and bad_input["onExitCodes"]["values"] == [2]
    assert "completionMode" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "stage-sa"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"},
                                  {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["template"]["metadata"]["labels"][STAGE_LABEL] == "train"
    (c,) = pod["containers"]
    assert c["name"] == CONTAINER and c["command"] == ["adaptinf", "stage", "train", "--run", "demo", "--step", "2"]
    assert "args" not in c  # argv only: no shell, no user strings in a command line
    # `cpu: 8` (a YAML number, as Kubernetes allows) reaches the Job as the quantity "8"
    assert c["resources"] == {"requests": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "4"},
                              "limits": {"memory": "16Gi", "nvidia.com/gpu": "4"}}
    assert c["securityContext"]["runAsNonRoot"] and not c["securityContext"]["allowPrivilegeEscalation"]
    env = {e["name"]: e for e in c["env"]}
    assert env["ADAPTINF_STORE"]["value"] == "s3://bucket/runs"
    assert json.loads(env["ADAPTINF_RUN_SPEC"]["value"])["trainBudget"] == 100
    assert env["ADAPTINF_DATASET"]["value"] == "ds-0"
    assert json.loads(env["ADAPTINF_DATASET_SPEC"]["value"]) == {"run": "demo", "source": "s3://bucket/d0.jsonl",
                                                                 "format": "auto"}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key,
                                                                          "optional": False}}}
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "ADAPTINF_SHARDS" not in env
    assert env["ADAPTINF_TRAIN_PROCESSES"]["value"] == "4"  # one training process per GPU
    # No credential is ever a literal value.
    assert not [e for e in c["env"] if "value" in e and any(w in e["name"] for w in ("SECRET", "PASSWORD", "TOKEN"))]


def test_extract_is_indexed_and_gpu_defaults() -> None:
    cfg = OperatorConfig.from_env({"ADAPTINF_DEFAULT_GPUS": "2", "ADAPTINF_GPU_RESOURCE": "amd.com/gpu"})
    job = build_job(RUN, 0, "extract", DATASET, cfg)
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 4, 4)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ADAPTINF_SHARDS"] == "4"
    # Each shard has its own retries; the first shard out of them fails the Job.
    assert (job["spec"]["backoffLimitPerIndex"], job["spec"]["maxFailedIndexes"]) == (2, 0)
    assert job["spec"]["backoffLimit"] == 2 * 4  # the total, for API servers without per-index limits
    # resources.default.gpus (1) wins over ADAPTINF_DEFAULT_GPUS; no run resources → the env default.
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["amd.com/gpu"] == "1"
    bare = {**RUN, "spec": {k: v for k, v in RUN["spec"].items() if k != "resources"}}
    assert build_job(bare, 0, "train", DATASET, cfg)["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": "2"}}
    # extract and eval use one device: a default of 2 gives them 1 (per shard, for extract).
    for stage in ("extract", "eval"):
        assert build_job(bare, 0, stage, DATASET, cfg)["spec"]["template"]["spec"]["containers"][0]["resources"] == {
            "requests": {"amd.com/gpu": "1"}, "limits": {"amd.com/gpu": "1"}}
    # A multi-GPU train pod gets a memory-backed /dev/shm for NCCL; others keep the default.
    train = build_job(bare, 0, "train", DATASET, cfg)["spec"]["template"]["spec"]
    assert train["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert train["containers"][0]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert "volumes" not in build_job(bare, 0, "eval", DATASET, cfg)["spec"]["template"]["spec"]
    # cluster-select and prune need no GPU unless the run says so.
    assert build_job(bare, 0, "cluster-select", DATASET, cfg)["spec"]["template"]["spec"]["containers"][0][
        "resources"] == {}
    assert build_job(bare, 0, "prune", DATASET, cfg)["spec"]["backoffLimit"] == 2
    # Only a train stage with several GPUs gets several processes (here 2 from the env default).
    def env_of(run: dict, stage: str) -> dict:
        return {e["name"]: e.get("value") for e in build_job(run, 0, stage, DATASET, cfg)["spec"]["template"]["spec"][
            "containers"][0]["env"]}
    assert env_of(bare, "train")["ADAPTINF_TRAIN_PROCESSES"] == "2"
    assert all("ADAPTINF_TRAIN_PROCESSES" not in env_of(bare, stage) for stage in ("extract", "eval"))


# -- the step machine ------------------------------------------------------------------------

def ds(name: str, created: str = "2024-01-01T00:00:00Z", order: int | None = None, step: int | None = None,
       outcome: str | None = None, age: float | None = None) -> DatasetView:
    return DatasetView(name, created, order, step, outcome, age)


def job(step: int, stage: str, state: str, dataset: str = "a", **kw) -> JobView:
    return JobView(f"demo-s{step}-{stage}", step, stage, dataset, state, **kw)


def obs(datasets: list[DatasetView], jobs: list[JobView] = (), **kw) -> Observation:
    return Observation(run="demo", datasets=tuple(datasets), jobs=tuple(jobs), **kw)


def test_no_datasets_is_pending() -> None:
    p = plan(obs([]))
    assert p.phase == "Pending" and p.actions == [] and p.step is None


def test_arrival_order() -> None:
    datasets = [ds("c", "2024-01-01T00:00:02Z"), ds("b", "2024-01-01T00:00:01Z"), ds("z", order=1),
                ds("y", order=0, created="2024-01-02T00:00:00Z"), ds("a", "2024-01-01T00:00:01Z")]
    assert [(s, d.name) for s, d in schedule(obs(datasets))] == [(0, "y"), (1, "z"), (2, "a"), (3, "b"), (4, "c")]


def test_fixed_steps_are_never_renumbered() -> None:
    # "late" has a lower order but arrives after "first" started: it takes the next step.
    datasets = [ds("first", order=5), ds("late", order=0)]
    p = plan(obs(datasets, [job(0, "extract", ACTIVE, "first")]))
    assert [(s, d.name) for s, d in schedule(obs(datasets, [job(0, "extract", ACTIVE, "first")]))] == [
        (0, "first"), (1, "late")]
    assert p.datasets["late"].phase == "Queued"
    # The dataset's status records its step even when its Jobs are gone (TTL).
    assert [(s, d.name) for s, d in schedule(obs([ds("x", step=3), ds("y")]))] == [(3, "x"), (4, "y")]


def test_first_stage_is_created() -> None:
    p = plan(obs([ds("a"), ds("b", "2024-01-02T00:00:00Z")]))
    assert p.actions == [CreateJob(0, "extract", "a")]
    assert p.phase == "Running" and (p.step, p.stage, p.dataset) == (0, "extract", "a")
    assert p.datasets["a"].phase == "Running" and p.datasets["b"].phase == "Queued"


def test_a_new_step_waits_until_no_dataset_has_arrived_for_the_window() -> None:
    """`kubectl apply -f` of d1 (order 1) then d0 (order 0): a pass between the two creates must
    not start d1; once both have been there for the window, d0 is step 0."""
    p = plan(obs([ds("d1", order=1, age=0.2)], arrival_window=5.0))
    assert p.actions == [] and p.phase == "Running" and p.awaiting_arrivals == pytest.approx(4.8)
    assert (p.step, p.dataset, p.datasets["d1"].phase, p.datasets["d1"].reason) == (0, "d1", "Queued",
                                                                                   "AwaitingArrivals")
    conds = {c["type"]: c for c in st.run_status(p, {}, {}, 1, False, "hint", now="t")["conditions"]}
    assert conds["Progressing"]["reason"] == "AwaitingArrivals" and conds["UpToDate"]["status"] == "False"
    # The newest arrival restarts the wait, whoever it is.
    p = plan(obs([ds("d1", order=1, age=3.0), ds("d0", order=0, age=0.5)], arrival_window=5.0))
    assert p.actions == [] and p.awaiting_arrivals == pytest.approx(4.5)
    p = plan(obs([ds("d1", order=1, age=6.0), ds("d0", order=0, age=5.5)], arrival_window=5.0))
    assert p.actions == [CreateJob(0, "extract", "d0")] and p.awaiting_arrivals is None
    # A clock far ahead of the operator's (negative age) waits one window, not more.
    assert plan(obs([ds("a", age=-600.0)], arrival_window=5.0)).awaiting_arrivals == 5.0
    # Window 0: no wait (the behaviour before the window existed).
    assert plan(obs([ds("a", age=0.0)])).actions == [CreateJob(0, "extract", "a")]


def test_the_arrival_window_never_holds_a_step_that_started() -> None:
    """Only the start of a new step waits: the stages of a running step, and its stage after a
    restart (every dataset young again to the new process), go on at once."""
    young = [ds("a", age=0.0), ds("b", age=0.0, created="2024-01-02T00:00:00Z")]
    p = plan(obs(young, [job(0, "extract", SUCCEEDED, reported=True)], arrival_window=5.0))
    assert p.actions == [CreateJob(0, "cluster-select", "a")] and p.awaiting_arrivals is None
    p = plan(obs([ds("a", step=0, age=0.0)], arrival_window=5.0))  # its status fixes the step; Jobs gone
    assert p.actions == [CreateJob(0, "extract", "a")]
    # A queued dataset arriving while step 0 runs does not change step 0; step 1 waits for it.
    done = [job(0, s, SUCCEEDED, reported=True) for s in STAGES]
    p = plan(obs([ds("a", age=30.0), ds("b", age=1.0, created="2024-01-02T00:00:00Z")], done, arrival_window=5.0))
    assert p.steps_completed == 1 and p.actions == [] and p.awaiting_arrivals == pytest.approx(4.0)


def test_stages_follow_each_other_and_report_once() -> None:
    jobs = [job(0, "extract", SUCCEEDED), job(0, "cluster-select", SUCCEEDED, reported=True)]
    p = plan(obs([ds("a")], jobs))
    assert p.actions == [ReportJob(jobs[0]), CreateJob(0, "train", "a")]


def test_store_markers_count_as_done() -> None:
    """After a restart with Jobs deleted (TTL), committed outputs are not recomputed."""
    committed = frozenset({(0, "extract"), (0, "cluster-select")})
    assert plan(obs([ds("a")], committed=committed)).actions == [CreateJob(0, "train", "a")]


def test_committed_stage_waits_for_its_job_to_end() -> None:
    """A stage commits before its pod exits (prune still writes summary.json and closes the MLflow
    run): the next stage starts only once the Job has ended."""
    committed = frozenset({(0, "extract")})
    p = plan(obs([ds("a")], [job(0, "extract", ACTIVE)], committed=committed))
    assert p.actions == [] and p.active_job == "demo-s0-extract"
    failed_after_commit = job(0, "extract", FAILED, reported=True)
    assert plan(obs([ds("a")], [failed_after_commit], committed=committed)).actions == [
        CreateJob(0, "cluster-select", "a")]


def test_running_stage_waits_and_nothing_is_duplicated() -> None:
    p = plan(obs([ds("a")], [job(0, "extract", SUCCEEDED, reported=True), job(0, "cluster-select", ACTIVE)]))
    assert p.actions == [] and p.phase == "Running" and p.active_job == "demo-s0-cluster-select"


def test_whole_run_and_next_dataset() -> None:
    jobs = [job(0, s, SUCCEEDED, reported=True) for s in STAGES]
    p = plan(obs([ds("a"), ds("b", "2024-01-02T00:00:00Z")], jobs))
    assert p.actions == [CreateJob(1, "extract", "b")] and p.steps_completed == 1
    assert p.datasets["a"].phase == "Succeeded"
    done = plan(obs([ds("a", step=0, outcome="Succeeded"), ds("b", step=1)],
                    [job(1, s, SUCCEEDED, "b", reported=True) for s in STAGES]))
    assert done.phase == "Succeeded" and done.actions == [] and done.steps_completed == 2
    assert (done.step, done.stage, done.dataset) == (1, "prune", "b")


def test_suspend_stops_the_running_stage_and_starts_nothing() -> None:
    assert plan(obs([ds("a")], suspended=True)).phase == "Suspended"
    assert plan(obs([ds("a")], suspended=True)).actions == []
    extract = job(0, "extract", ACTIVE)
    running = plan(obs([ds("a")], [extract], suspended=True))
    # The running Job is deleted: its pods (and GPUs) go; the stage starts over on resume.
    assert running.phase == "Suspended" and running.actions == [StopJob(extract)]
    assert running.datasets["a"].reason == "Suspended" and "runs again on resume" in running.datasets["a"].message
    # Outputs already sealed: the pod is finishing; let it, rather than lose the stage.
    sealing = plan(obs([ds("a")], [extract], committed=frozenset({(0, "extract")}), suspended=True))
    assert sealing.phase == "Running" and sealing.actions == []
    after = plan(obs([ds("a")], [job(0, "extract", SUCCEEDED, reported=True)], suspended=True))
    assert after.phase == "Suspended" and after.actions == [] and after.datasets["a"].phase == "Running"
    resumed = plan(obs([ds("a")], [job(0, "extract", SUCCEEDED, reported=True)]))
    assert resumed.actions == [CreateJob(0, "cluster-select", "a")]
    # The stopped Job is gone: the dataset keeps its step (the run's nextStep is past it already).
    gone = plan(obs([ds("a", step=0)], suspended=True, next_step=1))
    assert gone.phase == "Suspended" and gone.datasets["a"].step == 0
    assert plan(obs([ds("a", step=0)], next_step=1)).actions == [CreateJob(0, "extract", "a")]


def test_a_job_waiting_for_its_queue_is_queued_not_running() -> None:
    waiting = job(0, "train", ACTIVE, suspended=True, pending_for=None)
    done = [job(0, s, SUCCEEDED, reported=True) for s in ("extract", "cluster-select")]
    p = plan(obs([ds("a")], done + [waiting], pending_timeout=1.0))
    assert p.phase == "Queued" and p.actions == [] and p.active_job == waiting.name and p.stuck is None
    assert (p.datasets["a"].phase, p.datasets["a"].reason) == ("Queued", "AwaitingAdmission")
    # Suspending the run while it waits deletes the Job too: it leaves the queue.
    assert plan(obs([ds("a")], done + [waiting], suspended=True)).actions == [StopJob(waiting)]


def test_failure_stops_the_run_and_retry_deletes_the_job() -> None:
    failed = job(0, "train", FAILED, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
    base = [job(0, "extract", SUCCEEDED, reported=True), job(0, "cluster-select", SUCCEEDED, reported=True)]
    p = plan(obs([ds("a"), ds("b", "2024-01-02T00:00:00Z")], base + [failed]))
    assert p.phase == "Failed" and p.failure is not None
    assert (p.failure.stage, p.failure.step, p.failure.reason) == ("train", 0, "BackoffLimitExceeded")
    assert p.actions == [ReportJob(failed)] and p.datasets["b"].phase == "Queued"
    retry = plan(obs([ds("a")], base + [failed], retry_step=0))
    assert DeleteJob(failed) in retry.actions and ClearRetry(used=True) in retry.actions and retry.phase == "Running"
    stale = plan(obs([ds("a")], base, retry_step=7))
    assert ClearRetry(used=False) in stale.actions


def test_unusable_dataset_is_skipped() -> None:
    failed = job(0, "extract", FAILED, reason="PodFailurePolicy", reported=True)
    p = plan(obs([ds("a"), ds("b", "2024-01-02T00:00:00Z")], [failed], unusable_steps=frozenset({0})))
    assert p.datasets["a"].phase == "Failed" and p.datasets["a"].reason == "NoUsableRecords"
    assert p.actions == [CreateJob(1, "extract", "b")] and p.phase == "Running"


def test_pending_too_long_is_stuck() -> None:
    slow = job(0, "extract", ACTIVE, pending_for=31.0)
    assert plan(obs([ds("a")], [slow], pending_timeout=30)).stuck is not None
    assert plan(obs([ds("a")], [slow], pending_timeout=60)).stuck is None


# -- status -----------------------------------------------------------------------------------

def test_conditions_move_transition_time_only_on_flips() -> None:
    conds = st.set_condition([], "Stuck", False, "NotStuck", "", "t1")
    conds = st.set_condition(conds, "Stuck", False, "NotStuck", "still fine", "t2")
    assert conds[0]["lastTransitionTime"] == "t1" and conds[0]["message"] == "still fine"
    conds = st.set_condition(conds, "Stuck", True, "Unschedulable", "no GPU", "t3")
    assert conds[0]["lastTransitionTime"] == "t3" and len(conds) == 1
    assert st.flipped([{"type": "Stuck", "status": "False"}], conds) == {"Stuck": "True"}


def test_metrics_prefer_the_current_steps_markers() -> None:
    summary = {"steps": [{"step": 0, "pool_size": 50, "selected": 10, "avg_acc": 0.5, "forgetting_rate": 0.0}],
               "final": {"avg_acc": 0.5, "forgetting_rate": 0.0}}
    m = st.metrics(summary, {"cluster-select": {"pool_size": 90, "selected": 10, "mlflow_run_id": "child"},
                             "eval": {"avg_acc": 0.61234567, "forgetting_rate": 2.5}}, {"parent_run_id": "parent"})
    assert m == {"poolSize": 90, "selected": 10, "avgAcc": 0.6123, "forgettingRate": 2.5, "mlflowRunId": "parent"}
    assert st.metrics(None, {}, None) == {}


def test_run_status_from_a_failed_plan() -> None:
    failed = job(0, "train", FAILED, reason="BackoffLimitExceeded", message="limit")
    p = plan(obs([ds("a")], [job(0, "extract", SUCCEEDED), job(0, "cluster-select", SUCCEEDED), failed]))
    s = st.run_status(p, None, {"poolSize": 5}, 3, False, "kubectl annotate ...", now="t")
    conds = {c["type"]: c for c in s["conditions"]}
    assert s["phase"] == "Failed" and s["observedGeneration"] == 3 and s["poolSize"] == 5
    assert conds["Failed"]["status"] == "True" and "train" in conds["Failed"]["message"]
    assert "BackoffLimitExceeded" in conds["Failed"]["message"] and "kubectl annotate" in conds["Failed"]["message"]
    assert set(conds) == set(st.RUN_CONDITIONS)


def test_dataset_status_and_merge_patch() -> None:
    p = plan(obs([ds("a", step=0, outcome="Succeeded")]))
    new = st.dataset_status(p.datasets["a"], "demo", {"phase": "Running", "stage": "eval"},
                            {"accepted": 40, "rejected": 2}, 1, now="t")
    assert new["phase"] == "Succeeded" and new["accepted"] == 40 and new["step"] == 0
    assert {c["type"]: c["status"] for c in new["conditions"]} == {"RunFound": "True", "StepSucceeded": "True"}
    assert st.merge_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}
    assert st.merge_patch({"a": 1}, {"a": 1}) is None


def test_views_from_api_objects() -> None:
    api_job = {"metadata": {"name": "demo-s1-eval", "labels": {STEP_LABEL: "1", STAGE_LABEL: "eval",
                                                                 "adaptinf.dev/dataset": "b"},
                            "annotations": {"adaptinf.dev/reported": "failed"}},
               "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                          "message": "exit 2"}]}}
    v = job_view(api_job, [], now=0)
    assert (v.step, v.stage, v.dataset, v.state, v.reason, v.reported) == (1, "eval", "b", FAILED, "PodFailurePolicy", True)
    pending = {"metadata": {"creationTimestamp": "1970-01-01T00:00:10Z"}, "status": {"phase": "Pending"}}
    assert job_view({**api_job, "status": {}}, [pending], now=70).pending_for == 60
    d = dataset_view({"metadata": {"name": "b", "creationTimestamp": "x"}, "spec": {"order": 2},
                      "status": {"run": "other", "step": 4, "phase": "Succeeded"}}, "demo")
    assert d.step is None and d.outcome is None and d.order == 2  # a status written for another run is ignored
    done = {"metadata": {"name": "b"}, "status": {"run": "demo", "runUid": "old-uid", "step": 0, "phase": "Succeeded"}}
    assert dataset_view(done, "demo", "old-uid").outcome == "Succeeded"
    assert dataset_view(done, "demo", "new-uid").step is None  # the run was deleted and created again


def test_step_numbers_already_taken_are_never_given_again() -> None:
    # Step 1's dataset and Jobs are gone (deleted, TTL): only status.nextStep remembers it.
    p = plan(obs([ds("c")], next_step=2))
    assert p.actions == [CreateJob(2, "extract", "c")] and p.next_step == 3
    assert plan(obs([ds("a", step=0, outcome="Succeeded")], next_step=0)).next_step == 1


def test_a_refused_job_names_the_server_and_the_fields() -> None:
    from adaptinf.operator.kube import KubeError
    from adaptinf.operator.reconcile import Reconciler
    from adaptinf.operator.steps import Plan

    err = KubeError(422, {"reason": "Invalid", "message": 'Job.batch "x" is invalid: metadata.labels: Invalid value',
                          "details": {"causes": [{"reason": "FieldValueInvalid", "field": "metadata.labels"}]}},
                    "POST /apis/batch/v1/namespaces/ml/jobs")
    p = Plan(phase="Running", step=0, stage="train", dataset="a", active_job="x")
    Reconciler._refused_job(p, CreateJob(0, "train", "a"), "x", err)
    assert p.stuck_reason == "JobRefused" and p.active_job is None
    assert "Job x (train, step 0) (field: metadata.labels): 422 Invalid" in p.stuck
    conds = {c["type"]: c for c in st.run_status(p, {}, {}, 1, False, "hint")["conditions"]}
    assert (conds["Stuck"]["reason"], conds["Progressing"]["reason"]) == ("JobRefused", "JobRefused")


@pytest.mark.parametrize("value, message", [(0.5, "'500m'"), (-1, "negative"), (True, "boolean"), ("16GB", "pattern")])
def test_a_quantity_that_kubernetes_would_refuse_is_a_spec_error(value, message) -> None:
    from adaptinf.spec import SpecError, parse_resource
    run = json.loads(json.dumps(RUN))
    run["spec"]["resources"]["train"]["cpu"] = value
    with pytest.raises(SpecError, match="resources.train.cpu") as err:
        parse_resource(run)
    assert message in str(err.value)


def test_a_queued_run_creates_suspended_jobs_for_kueue() -> None:
    """The run's Kueue label reaches every Job, which is created suspended (Kueue admits it by
    unsuspending); its pods do not carry the label; priorityClassName reaches the pods."""
    from adaptinf.operator.jobs import QUEUE_LABEL
    run = json.loads(json.dumps(RUN))
    run["metadata"]["labels"][QUEUE_LABEL] = "team-a"
    run["spec"]["resources"]["train"]["priorityClassName"] = "batch-high"
    train = build_job(run, 2, "train", DATASET, OperatorConfig.from_env({}))
    assert train["metadata"]["labels"][QUEUE_LABEL] == "team-a" and train["spec"]["suspend"] is True
    assert QUEUE_LABEL not in train["spec"]["template"]["metadata"]["labels"]
    assert train["spec"]["template"]["spec"]["priorityClassName"] == "batch-high"
    plain = build_job(RUN, 2, "extract", DATASET, OperatorConfig.from_env({}))
    assert "suspend" not in plain["spec"] and "priorityClassName" not in plain["spec"]["template"]["spec"]


def test_job_view_reads_a_suspended_job() -> None:
    j = {"metadata": {"name": "demo-s0-train", "labels": {STEP_LABEL: "0", STAGE_LABEL: "train",
                                                          "adaptinf.dev/dataset": "a"}},
         "spec": {"suspend": True}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}
    assert job_view(j, [], 0.0).suspended and job_view(j, [], 0.0).state == ACTIVE
    j["spec"]["suspend"] = False
    assert not job_view(j, [], 0.0).suspended
