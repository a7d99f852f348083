"""Lifecycle situations of an ordinary cluster, end to end (emulated API server, `kopf run` of the
operator, the test kubelet running tests/k8s/fake_stage.py, real kubectl): the TTL controller
deleting finished Jobs, a run re-created under the same name, a dataset deleted or re-pointed
mid-step, refused Job and pod creations, preemption, and the Job manifest of multi-GPU runs."""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from adaptinf.layout import STAGES
from adaptinf.operator.jobs import job_name
from harness import (FAKE_STAGE, Cluster, calls, condition, dataset_manifest, events, has_job, hold, job_names,
                     jobs_created, run_manifest, status, wait_for, write_records)

pytestmark = pytest.mark.slow


def creates(cluster: Cluster, ns: str, job: str) -> int:
    return sum(1 for name, _ in jobs_created(cluster, ns) if name == job)


def test_ttl_deleted_failed_job_is_not_recreated(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                                 tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "ttl"
    (store / "_fail").mkdir(parents=True)
    (store / "_fail" / "train-0").write_text("1")
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator(ADAPTINF_TTL_AFTER_FINISHED="1")  # the TTL controller deletes Jobs 1 s after they end
    cluster.apply(run_manifest(run, store, resources={"default": {"backoffLimit": 0}}),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6)), namespace=ns)
    train = job_name(run, 0, "train")
    cluster.kubectl("wait", "--for=condition=Failed", f"llr/{run}", "-n", ns, "--timeout=60s")
    wait_for(lambda: train in kubelet.ttl_deleted, 30, "the TTL controller to delete the failed train Job")
    time.sleep(4)  # several reconcile passes (1 s) after the deletion

    # The failure outlives its Job: recorded in the run's status, nothing re-created.
    assert creates(cluster, ns, train) == 1
    assert cluster.api.find("jobs", ns, train) is None
    failed = condition(cluster, ns, "lifelongruns", run, "Failed")
    assert failed["status"] == "True" and "stage train of step 0" in failed["message"], failed
    assert status(cluster, ns, "lifelongruns", run)["failure"]["job"] == train
    assert Counter(c["stage"] for c in calls(store))["train"] == 1
    # Succeeded Jobs vanished too; their commit markers keep them done.
    assert cluster.api.find("jobs", ns, job_name(run, 0, "extract")) is None

    # The retry annotation is still the one way to run it again.
    (store / "_fail" / "train-0").unlink()
    cluster.kubectl("annotate", "llr", run, "-n", ns, "adaptinf.dev/retry-step=0")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    assert creates(cluster, ns, train) == 2
    assert "failure" not in status(cluster, ns, "lifelongruns", run)
    assert Counter(c["stage"] for c in calls(store)) == {**{s: 1 for s in STAGES}, "train": 2}

    # Step 0's Jobs are gone (TTL); deleting its dataset too leaves only its markers in the store.
    # The next dataset still becomes step 1 (status.nextStep), not a second "step 0" already done.
    wait_for(lambda: not cluster.api.list("jobs", ns), 30, "the TTL controller to delete every Job")
    cluster.kubectl("delete", "ids", "d0", "-n", ns, "--timeout=30s")
    cluster.apply(dataset_manifest("d1", run, write_records(tmp_path / "d1.jsonl", 4)), namespace=ns)
    cluster.kubectl("wait", "--for=condition=StepSucceeded", "ids/d1", "-n", ns, "--timeout=60s")
    assert status(cluster, ns, "instructiondatasets", "d1")["step"] == 1
    assert Counter(c["stage"] for c in calls(store) if c["step"] == 1) == {s: 1 for s in STAGES}

    # The operator watches only its own Jobs, filtered by the API server, never every Job.
    job_reads = [e for e in cluster.audit_entries() if (e["group"], e["resource"]) == ("batch", "jobs")
                 and e["verb"] in ("list", "watch") and e["userAgent"].startswith("kopf") and e["namespace"] == ns]
    assert job_reads and all("app.kubernetes.io/managed-by=adaptinf-operator" in e["labelSelector"] for e in job_reads)


def test_recreated_run_does_not_take_the_old_runs_store(cluster: Cluster, namespace: str, start_operator,
                                                        start_kubelet, tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "again"
    store.mkdir()
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    data = write_records(tmp_path / "d0.jsonl", 6)
    cluster.apply(run_manifest(run, store), dataset_manifest("d0", run, data), namespace=ns)
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    executed = len(calls(store))
    cluster.kubectl("delete", "llr", run, "-n", ns, "--timeout=30s")

    # Same name, another strategy: the old run's markers must not pass for this run's steps.
    cluster.apply(run_manifest(run, store, strategy="random"), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Failed", f"llr/{run}", "-n", ns, "--timeout=30s")
    failed = condition(cluster, ns, "lifelongruns", run, "Failed")
    assert failed["reason"] == "StoreInUse", failed
    assert "spec.storage.uri" in failed["message"] and f"{store}/{run}/" in failed["message"], failed
    assert any(e["reason"] == "StoreInUse" and e["type"] == "Warning" for e in events(cluster, ns))
    assert cluster.api.list("jobs", ns) == [] and len(calls(store)) == executed

    # A fresh location is all it takes (storage.uri is immutable: the run is created again with
    # it); the dataset, which waited meanwhile, then runs every stage for the new run.
    fresh = tmp_path / "fresh"
    cluster.kubectl("delete", "llr", run, "-n", ns, "--timeout=30s")
    cluster.apply(run_manifest(run, fresh, strategy="random"), namespace=ns)
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    assert Counter(c["stage"] for c in calls(fresh)) == {s: 1 for s in STAGES}
    assert condition(cluster, ns, "lifelongruns", run, "Failed")["status"] == "False"


def test_dataset_deleted_mid_step_finishes_its_step_first(cluster: Cluster, namespace: str, start_operator,
                                                          start_kubelet, tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "steady"
    store.mkdir()
    held = hold(store, "train", 0)
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    cluster.apply(run_manifest(run, store),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6), order=0),
                  dataset_manifest("d1", run, write_records(tmp_path / "d1.jsonl", 5), order=1), namespace=ns)
    wait_for(lambda: has_job(cluster, ns, job_name(run, 0, "train")), 60, "step 0's train to start")

    # spec.run is immutable (a CEL transition rule): the step cannot move to another run.
    moved = cluster.kubectl("patch", "ids", "d0", "-n", ns, "--type=merge", "-p", '{"spec": {"run": "other"}}',
                            check=False)
    assert moved.returncode != 0 and "spec.run is immutable" in moved.stderr, moved.stderr

    # Deleting d0 mid-step: its step runs to its end before d1's starts, one GPU Job at a time.
    cluster.kubectl("delete", "ids", "d0", "-n", ns, "--wait=false")
    time.sleep(3)
    assert not has_job(cluster, ns, job_name(run, 1, "extract")), job_names(cluster, ns)
    assert cluster.api.get("instructiondatasets", ns, "d0")["metadata"].get("deletionTimestamp")
    held.unlink()
    wait_for(lambda: cluster.api.find("instructiondatasets", ns, "d0") is None, 60, "d0 to go once its step ended")
    cluster.kubectl("wait", "--for=condition=StepSucceeded", "ids/d1", "-n", ns, "--timeout=60s")
    assert status(cluster, ns, "instructiondatasets", "d1")["step"] == 1
    step0_done = kubelet.completed_at[(ns, job_name(run, 0, "prune"))]
    step1_start = dict(jobs_created(cluster, ns))[job_name(run, 1, "extract")]
    assert step1_start >= step0_done - 1.0  # timestamps: the kubelet's and the audit log's clocks
    assert Counter((c["stage"], c["step"]) for c in calls(store)) == {(s, t): 1 for s in STAGES for t in (0, 1)}


def quota(cluster: Cluster, ns: str, name: str, **hard: str) -> None:
    cluster.api.create("resourcequotas", ns, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                                              "spec": {"hard": hard}})


def test_refused_jobs_are_visible_and_the_crd_refuses_what_it_can(cluster: Cluster, namespace: str, start_operator,
                                                                  start_kubelet, tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "quota"
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    data = write_records(tmp_path / "d0.jsonl", 6)

    # What would be a 422 on every Job is refused when the resource is applied, naming the field.
    long = "r" * 64
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False,
                              input=yaml.safe_dump(run_manifest(long, store)))
    assert refused.returncode != 0 and "metadata.name" in refused.stderr, refused.stderr
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False, input=yaml.safe_dump(
        run_manifest("mem", store, resources={"default": {"memory": "16GB"}})))
    assert refused.returncode != 0 and "spec.resources.default.memory" in refused.stderr, refused.stderr
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False, input=yaml.safe_dump(
        dataset_manifest("d" * 64, run, data)))
    assert refused.returncode != 0 and "metadata.name" in refused.stderr, refused.stderr

    # A quota refuses the Job itself: the run says so (condition + Event), it does not loop silently.
    quota(cluster, ns, "no-jobs", **{"count/jobs.batch": "0"})
    cluster.apply(run_manifest(run, store), dataset_manifest("d0", run, data), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Stuck", f"llr/{run}", "-n", ns, "--timeout=30s")
    stuck = condition(cluster, ns, "lifelongruns", run, "Stuck")
    assert stuck["reason"] == "JobRefused", stuck
    for words in (job_name(run, 0, "extract"), "403 Forbidden", "exceeded quota: no-jobs", "count/jobs.batch"):
        assert words in stuck["message"], (words, stuck["message"])
    s = status(cluster, ns, "lifelongruns", run)
    assert s["observedGeneration"] == 1 and s["phase"] == "Running"
    assert condition(cluster, ns, "lifelongruns", run, "Progressing")["reason"] == "JobRefused"
    warned = [e for e in events(cluster, ns) if e["reason"] == "JobRefused"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning" and "count/jobs.batch" in warned[0]["message"]

    # Lift the quota: the next pass creates the Job and the run finishes.
    cluster.api.delete("resourcequotas", ns, "no-jobs")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    assert condition(cluster, ns, "lifelongruns", run, "Stuck")["status"] == "False"


def test_jobs_whose_pods_are_refused_are_stuck(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                               tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "nopods"
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator(ADAPTINF_SERVICE_ACCOUNT="adaptinf-stage", ADAPTINF_PENDING_TIMEOUT="3600")
    cluster.apply(run_manifest(run, store, resources={"train": {"gpus": 1}}),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6)), namespace=ns)

    # The stage ServiceAccount is missing in this namespace: the Job exists, its pod never does.
    cluster.kubectl("wait", "--for=condition=Stuck", f"llr/{run}", "-n", ns, "--timeout=30s")
    stuck = condition(cluster, ns, "lifelongruns", run, "Stuck")
    assert stuck["reason"] == "PodsRefused" and job_name(run, 0, "extract") in stuck["message"], stuck
    assert 'serviceaccount "adaptinf-stage" not found' in stuck["message"], stuck
    assert any(e["reason"] == "PodsRefused" and e["type"] == "Warning" for e in events(cluster, ns))
    assert cluster.api.list("pods", ns) == []

    # A LimitRange of a CPU-only namespace (no GPU per container) refuses the train pod the same way.
    cluster.api.create("limitranges", ns, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "cpu-only"},
                                           "spec": {"limits": [{"type": "Container", "max": {"nvidia.com/gpu": "0"}}]}})
    cluster.api.create("serviceaccounts", ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                               "metadata": {"name": "adaptinf-stage"}})
    wait_for(lambda: "maximum nvidia.com/gpu usage per Container is 0, but limit is 1" in
             condition(cluster, ns, "lifelongruns", run, "Stuck").get("message", ""), 60,
             "the train pod to be refused by the LimitRange")
    assert job_name(run, 0, "train") in condition(cluster, ns, "lifelongruns", run, "Stuck")["message"]

    # So does a GPU quota of 0; lifting it lets the run finish.
    quota(cluster, ns, "no-gpus", **{"requests.nvidia.com/gpu": "0"})
    cluster.api.delete("limitranges", ns, "cpu-only")
    wait_for(lambda: "exceeded quota: no-gpus" in condition(cluster, ns, "lifelongruns", run, "Stuck").get("message", ""),
             60, "the train pod to be refused by the GPU quota")
    assert job_name(run, 0, "train") in condition(cluster, ns, "lifelongruns", run, "Stuck")["message"]
    cluster.api.delete("resourcequotas", ns, "no-gpus")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    assert condition(cluster, ns, "lifelongruns", run, "Stuck")["status"] == "False"


def running_pod(kubelet, job: str, after: int = 0) -> str | None:
    """The newest pod of `job` the kubelet started, once it has started more than `after` of them."""
    pods = [p for j, p, _ in kubelet.started_pods if j == job]
    return pods[-1] if len(pods) > after else None


def test_preemption_is_not_a_failure_and_shards_retry_on_their_own(cluster: Cluster, namespace: str, start_operator,
                                                                   start_kubelet, tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "spot"
    (store / "_crash").mkdir(parents=True)
    for shard in (0, 1):  # two crashes each: within each shard's budget, over a shared one (2)
        (store / "_crash" / f"extract-0-shard-{shard}").write_text("2")
    held = hold(store, "train", 0)
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    cluster.apply(run_manifest(run, store, extract={"shards": 2}),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6)), namespace=ns)

    # The train pod is evicted three times (a node drain, spot preemption): backoffLimit is 2.
    train = job_name(run, 0, "train")
    for n in range(3):
        pod = wait_for(lambda n=n: running_pod(kubelet, train, after=n), 60, f"train pod #{n + 1}")
        wait_for(lambda pod=pod: (cluster.api.find("pods", ns, pod) or {}).get("status", {}).get("phase") == "Running",
                 30, f"{pod} to run")
        kubelet.evict(pod)
    held.unlink()
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=90s")
    job = cluster.api.get("jobs", ns, train)
    assert (job["status"]["failed"], job["status"]["succeeded"]) == (0, 1)  # evictions are not counted
    assert len([p for j, p, _ in kubelet.started_pods if j == train]) == 4
    extract = cluster.api.get("jobs", ns, job_name(run, 0, "extract"))
    assert (extract["status"]["failed"], extract["status"]["succeeded"]) == (4, 2)
    assert condition(cluster, ns, "lifelongruns", run, "Failed")["status"] == "False"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a PID namespace")
def test_multi_gpu_train_stops_on_sigterm_as_pid_1(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                                   tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "gpus"
    store.mkdir()
    held = hold(store, "train", 0)
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE}, pid_namespace=True, grace=6.0)
    start_operator()
    cluster.apply(run_manifest(run, store, resources={"default": {"gpus": 2}}),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6)), namespace=ns)
    train = job_name(run, 0, "train")
    pod = wait_for(lambda: running_pod(kubelet, train), 60, "the train pod")
    wait_for(lambda: any(c["stage"] == "train" for c in calls(store)), 30, "rank 0 of the train group to start")
    time.sleep(1.0)  # rank 1 too

    # The Job manifest: /dev/shm for NCCL on the two-GPU train; extract and eval use one GPU.
    spec = cluster.api.get("jobs", ns, train)["spec"]["template"]["spec"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    for stage in ("extract", "eval") if has_job(cluster, ns, job_name(run, 0, "eval")) else ("extract",):
        limits = cluster.api.get("jobs", ns, job_name(run, 0, stage))["spec"]["template"]["spec"]["containers"][0][
            "resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1", (stage, limits)

    # Evicted: the runtime sends SIGTERM to the container's PID 1, the group's parent. It passes it
    # on; every rank exits 143 at once, well inside the grace period, not SIGKILLed after it.
    started = time.monotonic()
    kubelet.evict(pod)
    assert time.monotonic() - started < 5.0
    wait_for(lambda: (((cluster.api.find("pods", ns, pod) or {}).get("status") or {}).get("containerStatuses")
                      or [{}])[0].get("state", {}).get("terminated"), 30, "the evicted pod's exit")
    terminated = cluster.api.get("pods", ns, pod)["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 143, terminated
    assert sorted(p.name for p in (store / "_terminated").iterdir()) == ["train-0-rank-0", "train-0-rank-1"]

    held.unlink()  # an eviction is not a failure: the next pod finishes the step
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=90s")
    limits = cluster.api.get("jobs", ns, job_name(run, 0, "eval"))["spec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_kubectl_delete_all_leaves_runs_and_datasets(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    # `all` is a category of pods and Jobs, not of months-long runs (the CRDs use `adaptinf`).
    cluster.apply(run_manifest("kept", tmp_path / "store"), dataset_manifest("d0", "kept", tmp_path / "d0.jsonl"),
                  namespace=namespace)
    cluster.api.create("jobs", namespace, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "other"},
                                           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}],
                                                                          "restartPolicy": "Never"}}}})
    out = cluster.kubectl("delete", "all", "--all", "-n", namespace).stdout
    assert "job.batch \"other\" deleted" in out and "lifelongrun" not in out, out
    assert cluster.api.find("jobs", namespace, "other") is None
    assert cluster.api.find("lifelongruns", namespace, "kept") is not None
    assert cluster.api.find("instructiondatasets", namespace, "d0") is not None
    assert "lifelongrun.adaptinf.dev/kept" in cluster.kubectl("get", "adaptinf", "-n", namespace, "-o", "name").stdout


@pytest.mark.parametrize("patch, field", [({"storage": {"uri": "/elsewhere"}}, "spec.storage.uri"),
                                          ({"model": {"base": "other-model"}}, "spec.model.base")])
def test_store_and_base_model_cannot_change_under_a_run(cluster: Cluster, namespace: str, tmp_path: Path,
                                                         patch: dict, field: str) -> None:
    # A run's artifacts and adapters belong to one store and one base model: kubectl refuses the edit.
    cluster.apply(run_manifest("fixed", tmp_path / "store"), namespace=namespace)
    done = cluster.kubectl("patch", "lifelongrun", "fixed", "-n", namespace, "--type=merge",
                           "-p", json.dumps({"spec": patch}), check=False)
    assert done.returncode != 0 and f"{field} is immutable" in done.stderr, done.stderr
    unchanged = cluster.kubectl("patch", "lifelongrun", "fixed", "-n", namespace, "--type=merge",
                                "-p", json.dumps({"spec": {"trainBudget": 9}}), check=False)
    assert unchanged.returncode == 0, unchanged.stderr   # other fields stay editable


def test_kueue_admits_the_jobs_and_a_queued_run_holds_nothing(cluster: Cluster, namespace: str, start_operator,
                                                              start_kubelet, tmp_path: Path) -> None:
    """Kueue's part played by the test: a run with the queue label gets suspended Jobs; until the
    queue admits one (spec.suspend → false) no pod starts and the run reads Queued, not Running."""
    from adaptinf.operator.jobs import QUEUE_LABEL
    ns, store, run = namespace, tmp_path / "store", "queued"
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE}, extra_env={"FAKE_STAGE_SECONDS": "0.1"})
    start_operator()
    # The pod-template fields travel through the CRD (none pruned) into the train Job.
    pod_template = {"podLabels": {"example.com/team": "vision"}, "shmSize": "1Gi",
                    "env": [{"name": "EXTRA", "value": "1"}], "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
    manifest = run_manifest(run, store, resources={"train": {"priorityClassName": "batch-low", **pod_template}})
    manifest["metadata"]["labels"] = {QUEUE_LABEL: "team-a"}
    cluster.apply(manifest, dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6)), namespace=ns)
    extract = job_name(run, 0, "extract")
    wait_for(lambda: has_job(cluster, ns, extract), 30, "extract's Job")
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Queued", f"llr/{run}", "-n", ns, "--timeout=30s")
    time.sleep(2)  # several kubelet and operator passes
    assert kubelet.started_pods == [] and job_names(cluster, ns) == [extract]
    assert cluster.api.find("jobs", ns, extract)["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    progressing = condition(cluster, ns, "lifelongruns", run, "Progressing")
    assert progressing["reason"] == "AwaitingAdmission" and extract in progressing["message"]
    assert status(cluster, ns, "instructiondatasets", "d0")["phase"] == "Queued"
    assert "Queued" in cluster.kubectl("get", "llr", run, "-n", ns).stdout

    def admit_all() -> bool:  # the queue admits every waiting Job of the run; True once the run is done
        for j in cluster.api.list("jobs", ns):
            if j["spec"].get("suspend"):
                cluster.kubectl("patch", "job", j["metadata"]["name"], "-n", ns, "--type=merge",
                                "-p", '{"spec": {"suspend": false}}')
        return status(cluster, ns, "lifelongruns", run).get("stepsCompleted") == 1
    wait_for(admit_all, 60, "every admitted stage to run")
    train = cluster.api.find("jobs", ns, job_name(run, 0, "train"))
    assert train["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"
    assert train["spec"]["template"]["metadata"]["labels"]["example.com/team"] == "vision"
    assert train["spec"]["template"]["spec"]["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}, {"name": "scratch", "emptyDir": {}}]
    (container,) = train["spec"]["template"]["spec"]["containers"]
    assert {"name": "EXTRA", "value": "1"} in container["env"]
    assert container["volumeMounts"][1] == {"name": "scratch", "mountPath": "/scratch"}
    assert Counter(j for j, _, _ in kubelet.started_pods) == {job_name(run, 0, s): 1 for s in STAGES}
