"""Security end to end: credentials planted in Secrets reach the stage pods (through
`secretKeyRef`) and nowhere else — no CR spec or status, Job, Pod, Event, log line, MLflow
param, or store file — and user strings with shell metacharacters stay inert data."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adaptinf import layout
from adaptinf.operator.jobs import job_name
from harness import FAKE_STAGE, Cluster, calls, dataset_manifest, run_manifest, write_records

pytestmark = pytest.mark.slow

RUN = "guarded"


def secret(name: str, **values: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def everything_but_secrets(cluster: Cluster, ns: str) -> str:
    """Every object in the namespace that is not a Secret, as kubectl shows it."""
    kinds = "lifelongruns,instructiondatasets,jobs,pods,events,configmaps"
    return cluster.kubectl("get", kinds, "-n", ns, "-o", "json").stdout + \
        cluster.kubectl("describe", "lifelongruns,instructiondatasets,jobs", "-n", ns).stdout


def files_under(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file()}


def test_planted_secrets_appear_nowhere_and_metacharacters_are_data(cluster: Cluster, namespace: str, start_operator,
                                                                     start_kubelet, tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    s3_secret, mlflow_secret = f"planted-s3-{secrets.token_hex(8)}", f"planted-mlflow-{secrets.token_hex(8)}"
    planted = [s3_secret, mlflow_secret, base64.b64encode(s3_secret.encode()).decode(),
               base64.b64encode(mlflow_secret.encode()).decode()]
    cluster.api.create("secrets", ns, secret("s3-creds", AWS_ACCESS_KEY_ID="AKIAPLANTED",
                                             AWS_SECRET_ACCESS_KEY=s3_secret))
    cluster.api.create("secrets", ns, secret("mlflow-creds", MLFLOW_TRACKING_USERNAME="adaptinf",
                                             MLFLOW_TRACKING_PASSWORD=mlflow_secret))
    mlflow_db = tmp_path / "mlflow.db"
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    op = start_operator(ADAPTINF_S3_SECRET="s3-creds", ADAPTINF_MLFLOW_SECRET="mlflow-creds",
                        ADAPTINF_S3_ENDPOINT="http://s3.example:9000", ADAPTINF_MLFLOW_URI=f"sqlite:///{mlflow_db}")

    # A name is never a place for shell syntax: the API server refuses it (RFC 1123).
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False,
                              input=yaml.safe_dump(dataset_manifest("x; rm -rf ~", RUN, tmp_path / "x.jsonl")))
    assert refused.returncode != 0 and "is invalid" in refused.stderr

    # User strings full of shell syntax: a shell anywhere between spec and process would run them.
    canary = tmp_path / "pwned"
    evil = dataset_manifest("evil", RUN, f"{tmp_path}/none.jsonl; touch {canary}-1 #", order=1)
    evil["spec"]["imageRoot"] = f"$(touch {canary}-2)`touch {canary}-3`'\"; rm -rf {store} \\"
    cluster.apply(run_manifest(RUN, store, mlflow={"experiment": "exp; touch " + str(canary) + "-4"}),
                  dataset_manifest("good", RUN, write_records(tmp_path / "good.jsonl", 6), order=0), evil,
                  namespace=ns)
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=120s")

    # The pods did get the credentials (the fake stage records only their digest).
    assert {c["secret_sha256"] for c in calls(store)} == {hashlib.sha256(s3_secret.encode()).hexdigest()}
    # ... through references only: every Job's env carries secretKeyRefs, never a value.
    for job in cluster.api.list("jobs", ns):
        container = job["spec"]["template"]["spec"]["containers"][0]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
        assert refs == {"AWS_ACCESS_KEY_ID": "s3-creds", "AWS_SECRET_ACCESS_KEY": "s3-creds",
                        "MLFLOW_TRACKING_USERNAME": "mlflow-creds", "MLFLOW_TRACKING_PASSWORD": "mlflow-creds",
                        "MLFLOW_TRACKING_TOKEN": "mlflow-creds"}
        assert container["command"][:3] == ["adaptinf", "stage", job["metadata"]["labels"]["adaptinf.dev/stage"]]
        assert container["securityContext"]["runAsNonRoot"] is True

    # Nowhere else: objects, operator log, pod logs, the store, MLflow's database and artifacts.
    places = {"kubernetes objects": everything_but_secrets(cluster, ns), "operator log": op.logs()}
    places.update({f"log of pod {pod}": kubelet.log_of(pod) for _, pod, _ in kubelet.started_pods})
    places.update({path: data.decode("utf-8", "replace") for path, data in files_under(store, kubelet.workdir).items()})
    places["mlflow database"] = mlflow_db.read_bytes().decode("latin-1")
    for where, text in places.items():
        for value in planted:
            assert value not in text, f"a planted credential leaked into {where}"
    assert len(places) > 20

    # The metacharacters were carried as data: argv and JSON, never a shell.
    assert not list(tmp_path.glob("pwned*")) and store.exists()
    extract = cluster.api.get("jobs", ns, job_name(RUN, 1, "extract"))
    container = extract["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["adaptinf", "stage", "extract", "--run", RUN, "--step", "1"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert json.loads(env["ADAPTINF_DATASET_SPEC"])["imageRoot"] == evil["spec"]["imageRoot"]

    # The real stage, given that very Job's environment, treats them as a file name that does not
    # exist: the dataset has no usable record (exit 2), and nothing ran.
    (tmp_path / "real-store").mkdir()   # a missing local store is refused from step 1 on
    real_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ADAPTINF_", "MLFLOW_"))}, **env,
                "ADAPTINF_STORE": str(tmp_path / "real-store"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "adaptinf.cli", *container["command"][1:], "--no-progress"],
                          env=real_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads((tmp_path / "real-store" / layout.stage_prefix(RUN, 1, "ingest") / "report.json").read_text())
    assert report["accepted"] == 0 and f"none.jsonl; touch {canary}-1 #" in report["rejected"][0]["reason"]
    assert not list(tmp_path.glob("pwned*"))
