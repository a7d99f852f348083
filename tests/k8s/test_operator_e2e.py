"""End to end: emulated API server + `kopf run` of the operator + the kubelet + real kubectl.

The fast tests run `tests/k8s/fake_stage.py` in place of `adaptinf stage` (same argv, env, store
markers and exit codes); `test_real_stages_on_the_quick_demo_stream` runs the real stages against
S3 (a local moto server) and a real `mlflow server`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adaptinf import layout
from adaptinf.layout import STAGES
from adaptinf.operator.jobs import job_name
from harness import (FAKE_STAGE, Cluster, calls, condition, dataset_manifest, demo_manifests, events, has_job, hold,
                     job_done, job_names, jobs_created, printed, run_manifest, status, wait_for, write_records)

pytestmark = pytest.mark.slow

RUN = "demo"


def test_two_steps_with_operator_restarts(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                          tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    cluster.secret(ns, "s3-creds", AWS_ACCESS_KEY_ID="AKIATEST", AWS_SECRET_ACCESS_KEY="s3cr3t")
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE}, extra_env={"FAKE_STAGE_SECONDS": "0.2"})
    op = start_operator(ADAPTINF_S3_SECRET="s3-creds", ADAPTINF_S3_ENDPOINT="http://s3.example:9000")
    holds = [hold(store, "extract", 0), hold(store, "train", 0)]  # these stages wait until released
    # Applied out of order: spec.order decides the steps.
    cluster.apply(run_manifest(RUN, store, extract={"shards": 2}),
                  dataset_manifest("d1", RUN, write_records(tmp_path / "d1.jsonl", 9, bad=1), order=1),
                  dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 12), order=0), namespace=ns)

    # Kill -9 the operator at three points and start it again: while step 0's extract and train
    # run (held), and as step 1 begins.
    for job, held in ((job_name(RUN, 0, "extract"), holds[0]), (job_name(RUN, 0, "train"), holds[1]),
                      (job_name(RUN, 1, "extract"), None)):
        wait_for(lambda: has_job(cluster, ns, job), 60, f"Job {job}")
        op.kill()
        op.start()
        if held is not None:
            assert not job_done(cluster, ns, job)
            held.unlink()

    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=90s")
    cluster.kubectl("wait", "--for=condition=StepSucceeded", "ids/d0", "ids/d1", "-n", ns, "--timeout=10s")

    # Exactly one Job per stage and step, created in order, each stage executed exactly once.
    expected = [job_name(RUN, t, s) for t in (0, 1) for s in STAGES]
    assert job_names(cluster, ns) == sorted(expected)
    started = list(dict.fromkeys(job for job, _, _ in kubelet.started_pods))
    assert started == expected
    executed = Counter((c["stage"], c["step"], c["shard"]) for c in calls(store))
    assert set(executed.values()) == {1}, executed
    assert {(c["step"], c["shard"]) for c in calls(store) if c["stage"] == "extract"} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # From the Secret, via secretKeyRef (the fake stage records only a digest of what it got).
    assert {c["secret_sha256"] for c in calls(store)} == {hashlib.sha256(b"s3cr3t").hexdigest()}
    assert op.starts == 4

    run = cluster.api.get("lifelongruns", ns, RUN)
    s = run["status"]
    assert (s["phase"], s["step"], s["stage"], s["dataset"], s["stepsCompleted"]) == ("Succeeded", 1, "prune", "d1", 2)
    assert s["observedGeneration"] == run["metadata"]["generation"]
    assert (s["poolSize"], s["selected"], s["avgAcc"], s["forgettingRate"]) == (21, 8, 0.75, 1.5)
    assert s["mlflowRunId"] == f"fake-{RUN}"
    conds = {c["type"]: c["status"] for c in s["conditions"]}
    assert conds == {"Progressing": "False", "UpToDate": "True", "Suspended": "False", "Stuck": "False",
                     "Failed": "False"}
    row = cluster.kubectl("get", "llr", RUN, "-n", ns, "--no-headers").stdout.split()
    assert row[:7] == [RUN, "1", "prune", "Succeeded", "21", "0.75", "1.5"]
    rows = [r.split()[:6] for r in cluster.kubectl("get", "ids", "-n", ns, "--no-headers").stdout.splitlines()]
    assert rows == [["d0", RUN, "0", "Succeeded", "12", "0"], ["d1", RUN, "1", "Succeeded", "9", "1"]]

    # Events: every stage start and finish, each step, and the run catching up. Kopf posts Events
    # asynchronously, so a SIGKILL may lose the ones queued just before it (at most those of one
    # reconcile per kill) — Events are best effort, as in Kubernetes; the status is not.
    reasons = Counter((e["involvedObject"]["name"], e["reason"]) for e in events(cluster, ns))
    assert 10 - 3 <= reasons[(RUN, "StageStarted")] <= 10
    assert 10 - 3 <= reasons[(RUN, "StageSucceeded")] <= 10 + 3
    assert reasons[("d1", "StepSucceeded")] == 1 and reasons[(RUN, "UpToDate")] == 1
    described = cluster.kubectl("describe", "llr", RUN, "-n", ns).stdout
    assert "StageSucceeded" in described and re.search(r"Steps Completed:\s+2", described)

    # The Jobs follow the contract (argv, env, owner).
    extract = cluster.api.get("jobs", ns, job_name(RUN, 0, "extract"))
    assert extract["spec"]["completionMode"] == "Indexed" and extract["spec"]["completions"] == 2
    assert extract["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    container = extract["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["adaptinf", "stage", "extract", "--run", RUN, "--step", "0"]

    # Deleting the run deletes its Jobs and their pods; its datasets are told.
    cluster.kubectl("delete", "llr", RUN, "-n", ns, "--timeout=30s")
    wait_for(lambda: not cluster.api.list("jobs", ns), 20, "the Jobs to be deleted")
    wait_for(lambda: not cluster.api.list("pods", ns), 20, "the pods to be deleted")
    cluster.kubectl("wait", "--for=condition=RunFound=false", "ids/d0", "-n", ns, "--timeout=20s")
    assert status(cluster, ns, "instructiondatasets", "d0")["phase"] == "Succeeded"  # its step stays done

    # What the operator did in its namespace, i.e. what its RBAC Role must allow (docs/operator.md).
    assert cluster.permissions_used(namespace=ns) <= {
        ("adaptinf.dev", "lifelongruns", v) for v in ("get", "list", "watch", "patch")} | {
        ("adaptinf.dev", "instructiondatasets", v) for v in ("get", "list", "watch", "patch")} | {
        ("adaptinf.dev", "lifelongruns/status", "patch"), ("adaptinf.dev", "instructiondatasets/status", "patch"),
        ("", "pods", "list"), ("", "events", "create"), ("", "events", "list")} | {
        ("batch", "jobs", v) for v in ("list", "watch", "create", "patch", "delete")}
    assert ("batch", "jobs", "create") in cluster.permissions_used(namespace=ns)


def test_datasets_arriving_one_by_one_run_in_spec_order(cluster: Cluster, namespace: str, start_operator,
                                                         start_kubelet, tmp_path: Path) -> None:
    """`kubectl apply -f datasets/` creates its objects one after the other, and a pass can fall
    between two of them: the operator that has seen only d1 (order 1) waits, and d0 (order 0),
    arriving within ADAPTINF_ARRIVAL_WINDOW, is step 0."""
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator(ADAPTINF_ARRIVAL_WINDOW="3")
    cluster.apply(run_manifest(RUN, store),
                  dataset_manifest("d1", RUN, write_records(tmp_path / "d1.jsonl", 9), order=1), namespace=ns)
    wait_for(lambda: condition(cluster, ns, "lifelongruns", RUN, "Progressing").get("reason") == "AwaitingArrivals",
             30, "the run to wait for more datasets")
    assert cluster.api.list("jobs", ns) == [] and status(cluster, ns, "instructiondatasets", "d1")["phase"] == "Queued"
    cluster.api.create("instructiondatasets", ns,
                       dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 12), order=0))

    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    assert [status(cluster, ns, "instructiondatasets", d)["step"] for d in ("d0", "d1")] == [0, 1]
    extract = cluster.api.get("jobs", ns, job_name(RUN, 0, "extract"))
    assert extract["metadata"]["labels"]["adaptinf.dev/dataset"] == "d0"


def test_suspend_failure_and_retry(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                   tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    (store / "_fail").mkdir(parents=True)
    (store / "_fail" / "train-0").write_text("1")  # a crash: retried by backoffLimit
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE}, extra_env={"FAKE_STAGE_SECONDS": "0.2"})
    start_operator()
    held = hold(store, "extract", 0)
    cluster.apply(run_manifest(RUN, store, suspend=True, resources={"default": {"backoffLimit": 1}}),
                  dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 10)), namespace=ns)

    cluster.kubectl("wait", "--for=condition=Suspended", f"llr/{RUN}", "-n", ns, "--timeout=30s")
    assert cluster.api.list("jobs", ns) == [] and status(cluster, ns, "lifelongruns", RUN)["phase"] == "Suspended"
    assert status(cluster, ns, "instructiondatasets", "d0")["phase"] == "Queued"

    # Resume; suspend again while extract runs: its Job is deleted (its pod stopped, whatever it
    # held freed), nothing new starts; resumed, extract starts over and the run goes on.
    extract = job_name(RUN, 0, "extract")
    cluster.kubectl("patch", "llr", RUN, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    # The stage itself has started (its call is recorded), not only its pod: under load the
    # interpreter can still be importing when the suspension lands.
    wait_for(lambda: any(c["stage"] == "extract" for c in calls(store)), 30, "extract to start running")
    cluster.kubectl("patch", "llr", RUN, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Suspended", f"llr/{RUN}", "-n", ns, "--timeout=30s")
    wait_for(lambda: job_names(cluster, ns) == [], 30, "the running extract Job to be deleted")
    assert any(e["reason"] == "StageStopped" and extract in e["message"] for e in events(cluster, ns))
    time.sleep(1)  # a few passes with the Job gone: the dataset keeps its step
    assert status(cluster, ns, "instructiondatasets", "d0")["step"] == 0
    held.unlink()
    cluster.kubectl("patch", "llr", RUN, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    wait_for(lambda: job_done(cluster, ns, extract), 30, "extract to run again and finish")
    assert [j for j, _, _ in kubelet.started_pods].count(extract) == 2

    # train crashes twice (backoffLimit 1): the run fails naming the stage and the reason.
    cluster.kubectl("wait", "--for=condition=Failed", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    failed = condition(cluster, ns, "lifelongruns", RUN, "Failed")
    assert "train" in failed["message"] and "BackoffLimitExceeded" in failed["message"]
    assert "adaptinf.dev/retry-step=0" in failed["message"]
    assert [p for j, p, _ in kubelet.started_pods if j == job_name(RUN, 0, "train")].__len__() == 2
    assert "Failed" in cluster.kubectl("get", "llr", RUN, "-n", ns).stdout
    assert any(e["reason"] == "StageFailed" and e["type"] == "Warning" for e in events(cluster, ns))
    assert status(cluster, ns, "instructiondatasets", "d0")["phase"] == "Failed"

    # Fix it and retry; eval then exits 2 (bad input): one attempt only, no backoff retries.
    (store / "_fail" / "train-0").unlink()
    (store / "_fail" / "eval-0").write_text("2")
    cluster.kubectl("annotate", "llr", RUN, "-n", ns, "adaptinf.dev/retry-step=0")
    wait_for(lambda: "eval" in condition(cluster, ns, "lifelongruns", RUN, "Failed").get("message", ""), 60,
             "eval to fail")
    assert "PodFailurePolicy" in condition(cluster, ns, "lifelongruns", RUN, "Failed")["message"]
    assert len([p for j, p, _ in kubelet.started_pods if j == job_name(RUN, 0, "eval")]) == 1
    assert "adaptinf.dev/retry-step" not in (cluster.api.get("lifelongruns", ns, RUN)["metadata"].get("annotations") or {})

    (store / "_fail" / "eval-0").unlink()
    cluster.kubectl("annotate", "llr", RUN, "-n", ns, "adaptinf.dev/retry-step=0")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    assert condition(cluster, ns, "lifelongruns", RUN, "Failed")["status"] == "False"
    assert job_names(cluster, ns) == sorted(job_name(RUN, 0, s) for s in STAGES)
    # extract twice: stopped by the suspension, then run again
    assert Counter(c["stage"] for c in calls(store)) == {"extract": 2, "cluster-select": 1, "train": 3, "eval": 2,
                                                         "prune": 1}


def test_unusable_dataset_stuck_pods_and_missing_run(cluster: Cluster, namespace: str, start_operator,
                                                     start_kubelet, tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    start_kubelet(command_map={"adaptinf": FAKE_STAGE}, node_labels={"pool": "cpu"})
    start_operator(ADAPTINF_PENDING_TIMEOUT="1")

    # A dataset for a run that does not exist: a condition and a Warning.
    cluster.apply(dataset_manifest("orphan", "ghost", tmp_path / "x.jsonl"), namespace=ns)
    cluster.kubectl("wait", "--for=condition=RunFound=false", "ids/orphan", "-n", ns, "--timeout=30s")
    assert any(e["reason"] == "RunNotFound" and e["involvedObject"]["name"] == "orphan" for e in events(cluster, ns))

    # Step 0's dataset has no usable record: skipped. Step 1's cluster-select asks for a node pool
    # that no node has: its pod stays Pending and the run reports Stuck.
    cluster.apply(run_manifest(RUN, store, resources={"clusterSelect": {"nodeSelector": {"pool": "gpu"}}}),
                  dataset_manifest("bad", RUN, write_records(tmp_path / "bad.jsonl", 0, bad=3), order=0),
                  dataset_manifest("good", RUN, write_records(tmp_path / "good.jsonl", 5), order=1), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Stuck", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    stuck = condition(cluster, ns, "lifelongruns", RUN, "Stuck")
    assert stuck["reason"] == "Unschedulable" and job_name(RUN, 1, "cluster-select") in stuck["message"]
    assert any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in events(cluster, ns))
    bad = status(cluster, ns, "instructiondatasets", "bad")
    assert (bad["phase"], bad["step"], bad["accepted"], bad["rejected"]) == ("Failed", 0, 0, 3)
    assert condition(cluster, ns, "instructiondatasets", "bad", "StepSucceeded")["reason"] == "NoUsableRecords"
    assert status(cluster, ns, "instructiondatasets", "good")["step"] == 1
    s = status(cluster, ns, "lifelongruns", RUN)
    assert (s["phase"], s["step"], s["stage"]) == ("Running", 1, "cluster-select")

    # The missing run appears: the dataset finds it.
    cluster.apply(run_manifest("ghost", tmp_path / "ghost-store", suspend=True), namespace=ns)
    cluster.kubectl("wait", "--for=condition=RunFound", "ids/orphan", "-n", ns, "--timeout=30s")


def _has_stage_command() -> bool:
    if shutil.which("adaptinf") is None:
        return False
    return subprocess.run(["adaptinf", "stage", "--help"], capture_output=True).returncode == 0


def _iso(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.real_stages
@pytest.mark.skipif(not _has_stage_command(), reason="the `adaptinf stage` command is not installed yet")
def test_real_stages_on_the_quick_demo_stream(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                              demo_quick: Path, s3_endpoint: str, s3_bucket: str,
                                              mlflow_server: str) -> None:
    """What a user does: kubectl apply a LifelongRun and two InstructionDatasets (the CRDs are
    applied with kubectl by the `cluster` fixture); the real stages learn both steps with the tiny
    model, storing in S3 (moto) and tracking in a real MLflow server."""
    import boto3
    from mlflow.tracking import MlflowClient

    ns, prefix = namespace, "runs"
    run, *datasets = demo_manifests(demo_quick, 2)
    name = run["metadata"]["name"]
    # The MLflow server is shared by the session: an experiment of its own keeps this test apart.
    run["spec"].update(storage={"uri": f"s3://{s3_bucket}/{prefix}"}, mlflow={"experiment": f"e2e-{ns}"})
    # Short training (what is tested is the operator around real stages, not how well they learn).
    run["spec"]["model"]["initialEpochs"] = 2
    run["spec"]["training"]["epochs"] = 1
    # Credentials reach the stages only through the Secret (of this process's environment the
    # kubelet passes the pods only PATH, HOME, PYTHONPATH, LANG); the operator gets them as the
    # chart's Deployment does.
    creds = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}  # set by s3_bucket
    cluster.secret(ns, "s3-creds", **creds)
    kubelet = start_kubelet(extra_env={"ADAPTINF_LOG_LEVEL": "INFO"})
    start_operator(ADAPTINF_S3_ENDPOINT=s3_endpoint, ADAPTINF_S3_SECRET="s3-creds", ADAPTINF_MLFLOW_URI=mlflow_server,
                   AWS_ENDPOINT_URL_S3=s3_endpoint, AWS_DEFAULT_REGION="us-east-1", **creds)
    cluster.apply(run, *datasets, namespace=ns)
    try:
        cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{name}", "-n", ns, "--timeout=400s", timeout=420)
    except AssertionError:
        logs = "\n".join(f"--- {pod}\n{kubelet.log_of(pod)[-2000:]}" for _, pod, _ in kubelet.started_pods[-2:])
        raise AssertionError(f"run did not finish: {status(cluster, ns, 'lifelongruns', name)}\n{logs}") from None
    ds_names = [d["metadata"]["name"] for d in datasets]
    cluster.kubectl("wait", "--for=condition=StepSucceeded", *(f"ids/{d}" for d in ds_names), "-n", ns, "--timeout=10s")

    # Five Jobs per step, each created once, in stage order, each after the previous one finished,
    # all owned by the run.
    expected = [job_name(name, t, st) for t in (0, 1) for st in STAGES]
    created = jobs_created(cluster, ns)
    assert [job for job, _ in created] == expected
    listed = json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]
    jobs = {j["metadata"]["name"]: j for j in listed}
    assert sorted(jobs) == sorted(expected)
    for (prev, _), (_, created_at) in zip(created, created[1:]):
        assert _iso(jobs[prev]["status"]["completionTime"]) <= created_at, f"{prev} had not finished"
    uid = cluster.api.get("lifelongruns", ns, name)["metadata"]["uid"]
    for job in jobs.values():
        assert job["status"]["succeeded"] >= 1
        assert [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in job["metadata"]["ownerReferences"]] == [
            ("LifelongRun", name, uid, True)]
    env = {e["name"]: e for e in jobs[job_name(name, 1, "train")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == s3_endpoint and env["MLFLOW_TRACKING_URI"]["value"] == mlflow_server
    for key in creds:
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert "value" not in env[key] and (ref["name"], ref["key"]) == ("s3-creds", key)

    # S3: the run summary, both steps' stage markers, the pool manifests.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def s3_json(key: str) -> Any:
        return json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/{key}")["Body"].read())

    summary = s3_json(layout.summary_key(name))
    steps = summary["steps"]
    assert [(st["step"], st["dataset"]) for st in steps] == [(0, ds_names[0]), (1, ds_names[1])]
    suite = {task["skill"] for task in run["spec"]["eval"]["suite"]}
    assert all(set(st["skills"]) == suite for st in steps)
    for t in (0, 1):
        markers = [layout.stage_prefix(name, t, st) for st in STAGES if st != "extract"]
        markers.append(layout.shard_prefix(name, t, 0, 1))
        assert all(s3_json(f"{m}/_COMMITTED.json") for m in markers)
        assert len(s3_json(layout.pool_key(name, t))["members"]) == steps[t]["pool_size"]

    # The status, as the API and kubectl's printer columns show it.
    s = status(cluster, ns, "lifelongruns", name)
    assert (s["phase"], s["step"], s["stage"], s["dataset"], s["stepsCompleted"]) == (
        "Succeeded", 1, "prune", ds_names[1], 2)
    assert (s["poolSize"], s["selected"]) == (steps[1]["pool_size"], steps[1]["selected"]) and s["selected"] > 0
    assert s["avgAcc"] == pytest.approx(summary["final"]["avg_acc"], abs=1e-4)
    assert s["forgettingRate"] == pytest.approx(summary["final"]["forgetting_rate"], abs=1e-4)
    row = printed(cluster, ns, "llr", name)
    assert [row[c] for c in ("STEP", "STAGE", "PHASE", "POOL", "STRATEGY")] == [
        "1", "prune", "Succeeded", str(s["poolSize"]), run["spec"]["strategy"]]
    assert (float(row["AVGACC"]), float(row["FORGETTING"])) == (s["avgAcc"], s["forgettingRate"])
    for t, d in enumerate(ds_names):
        ds = status(cluster, ns, "instructiondatasets", d)
        assert (ds["phase"], ds["step"]) == ("Succeeded", t) and ds["accepted"] > 0
        assert [printed(cluster, ns, "ids", d)[c] for c in ("RUN", "STEP", "PHASE")] == [name, str(t), "Succeeded"]

    # MLflow: the parent run (the one the status names) with exactly one child run per step, each
    # with the per-skill scores that step's eval logged (acc.<skill>, as the local runner logs them).
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(run["spec"]["mlflow"]["experiment"]).experiment_id
    parent = client.get_run(s["mlflowRunId"])
    assert parent.data.tags["adaptinf.run"] == name and parent.data.tags["adaptinf.step"] == "parent"
    children = sorted(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"),
                      key=lambda r: int(r.data.tags["adaptinf.step"]))
    assert [(c.data.tags["adaptinf.step"], c.data.tags["adaptinf.dataset"], c.info.status) for c in children] == [
        ("0", ds_names[0], "FINISHED"), ("1", ds_names[1], "FINISHED")]
    for child, st in zip(children, steps):
        assert {k: v for k, v in child.data.metrics.items() if k.startswith("acc.")} == pytest.approx(
            {f"acc.{k}": v for k, v in st["skills"].items()})
        assert child.data.metrics["avg_acc"] == pytest.approx(st["avg_acc"])
        assert child.data.metrics["selected"] == st["selected"]
    history = client.get_metric_history(parent.info.run_id, "acc.colour")
    assert [(m.step, m.value) for m in history] == [(t, pytest.approx(st["skills"]["colour"]))
                                                    for t, st in enumerate(steps)]
