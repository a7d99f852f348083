"""The built images, run for real with podman (`make images-test` builds them first and sets
IMAGES_OPERATOR / IMAGES_STAGE; without those this module is skipped).

- Both images run as their numeric non-root USER and, with a read-only root filesystem, have /tmp
  as their only writable path (the chart's and the operator Jobs' pod security).
- The operator image, against the API emulator (tests/k8s), reconciles a LifelongRun of the quick
  demo stream: it creates the step's extract Job; the emulator's kubelet runs that Job's container
  in the CPU stage image (tests/images/podman_pod.py); the operator reads the stage's marker from
  the store (a mounted folder) and creates cluster-select, which runs in the stage image too; then
  the operator moves the run on to train.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from collections.abc import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "k8s"))  # the emulator's harness, kubelet and API client

from harness import Cluster, demo_manifests, emulated_cluster, free_port, liveness_ok, wait_for  # noqa: E402
from kubeapi import KubeApi  # noqa: E402
from kubelet import Kubelet  # noqa: E402

OPERATOR = os.environ.get("IMAGES_OPERATOR")
STAGE = os.environ.get("IMAGES_STAGE")
pytestmark = [
    pytest.mark.skipif(not (OPERATOR and STAGE), reason="builds images: run `make images-test`"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]
LABEL = f"adaptinf-images-test={uuid.uuid4().hex[:8]}"  # every container this module starts
RUN_STAGES = ("extract", "cluster-select")
# Pod security of the chart's Deployment and of the operator's Jobs, in podman's words. The
# image's own USER is used (no --user): that is what runAsNonRoot relies on.
SECURE = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777",
          "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module", autouse=True)
def remove_containers() -> Iterator[None]:
    yield
    ids = podman("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "5", *ids, check=False)


# Which of these paths the image's user can create a file in, and who that user is.
PROBE = r"""
import json, os, tempfile
writable = []
for d in ("/", "/etc", "/opt/adaptinf", "/home/adaptinf", "/var/tmp", "/run", "/tmp"):
    try:
        tempfile.NamedTemporaryFile(dir=d).close()
        writable.append(d)
    except OSError:
        pass
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "writable": writable}))
"""


@pytest.mark.parametrize("image", ["operator", "stage"])
def test_image_runs_as_non_root_with_only_tmp_writable(image: str) -> None:
    ref = {"operator": OPERATOR, "stage": STAGE}[image]
    out = podman("run", "--rm", "--label", LABEL, *SECURE, "--entrypoint", "python", ref, "-c", PROBE).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"uid": 10001, "gid": 10001, "writable": ["/tmp"]}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The API emulator with the CRDs (as tests/k8s/conftest.py, one per test)."""
    work = tmp_path / "cluster"
    work.mkdir()
    with emulated_cluster(work) as c:
        yield c


def job_state(cluster: Cluster, ns: str, name: str) -> str | None:
    job = cluster.api.find("jobs", ns, name)
    if job is None:
        return None
    conds = [c["type"] for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"]
    return conds[0] if conds else "Active"


def test_operator_image_reconciles_a_run_whose_jobs_run_in_the_stage_image(
        cluster: Cluster, demo_quick: Path, mlflow_server: str, tmp_path: Path) -> None:
    from adaptinf import layout
    from adaptinf.operator.jobs import job_name

    ns = "images"
    cluster.api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # A copy the images' user may read: pytest makes its tmp folders 0700 and demo-data writes
    # model.safetensors 0600 (root only).
    demo = tmp_path / "demo"
    shutil.copytree(demo_quick, demo)
    for path in [demo, *demo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    run, dataset = demo_manifests(demo, 1)
    name = run["metadata"]["name"]
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)  # written by the images' user 10001
    run["spec"].update(storage={"uri": str(store)}, mlflow={"experiment": f"images-{uuid.uuid4().hex[:8]}"})

    # Both containers see the store and the demo stream at their host paths (the run spec's
    # absolute paths); the demo read-only. Host network: the emulator and MLflow listen on 127.0.0.1.
    mounts = [f"{store}:{store}", f"{demo}:{demo}:ro"]
    port = free_port()
    op = podman("run", "-d", "--label", LABEL, "--network", "host", *SECURE,
                *(a for m in mounts for a in ("-v", m)), "-v", f"{cluster.kubeconfig}:/kube/config:ro",
                "-e", "KUBECONFIG=/kube/config", "-e", f"ADAPTINF_NAMESPACE={ns}",
                "-e", "ADAPTINF_RECONCILE_INTERVAL=1", "-e", "ADAPTINF_DEFAULT_GPUS=0",
                "-e", f"ADAPTINF_STAGE_IMAGE={STAGE}", "-e", f"ADAPTINF_MLFLOW_URI={mlflow_server}",
                # The image's CMD is --standalone --all-namespaces; the chart passes --namespace, and
                # the last --liveness wins over the ENTRYPOINT's port 8080 (which others may hold here).
                OPERATOR, "--standalone", f"--namespace={ns}",
                f"--liveness=http://127.0.0.1:{port}/healthz").stdout.strip()

    def operator_logs() -> str:
        p = podman("logs", op, check=False)
        return (p.stdout + p.stderr)[-4000:]

    def operator_up() -> bool:
        state = podman("inspect", "-f", "{{.State.Running}}", op).stdout.strip()
        assert state == "true", f"the operator container exited:\n{operator_logs()}"
        return liveness_ok(port)

    kubelet = Kubelet(KubeApi(cluster.server, "adaptinf-images-kubelet"), tmp_path / "kubelet",
                      command_map={"adaptinf": [sys.executable, str(HERE / "podman_pod.py")]},
                      extra_env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                                 **{k: os.environ[k] for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")
                                    if k in os.environ},
                                 "IMAGES_STAGE": STAGE, "IMAGES_LABEL": LABEL, "IMAGES_MOUNTS": ",".join(mounts),
                                 "IMAGES_RUN_STAGES": ",".join(RUN_STAGES)})
    try:
        wait_for(operator_up, 90, "the operator image's liveness endpoint", interval=1)
        kubelet.start()
        cluster.apply(run, dataset, namespace=ns)
        jobs = [job_name(name, 0, s) for s in RUN_STAGES]
        for job in jobs:
            # extract: model load + features of the first dataset; minutes on a loaded 2-core box.
            state = wait_for(lambda: job_state(cluster, ns, job) in ("Complete", "Failed") and job_state(cluster, ns, job),
                             600, f"Job {job} to finish", interval=1)
            if state != "Complete":
                logs = "\n".join(kubelet.log_of(p)[-3000:] for j, p, _ in kubelet.started_pods if j == job)
                pytest.fail(f"Job {job}: {state}\n{logs}\n--- operator\n{operator_logs()}")
        # The operator read cluster-select's marker and moved on.
        train = job_name(name, 0, "train")
        wait_for(lambda: cluster.api.find("jobs", ns, train), 60, f"the operator to create {train}")
    except BaseException:
        print(operator_logs())
        raise
    finally:
        kubelet.stop()
        podman("rm", "-f", "-t", "5", op, check=False)

    # What the stage image wrote: both stages sealed their outputs, as the image's user.
    # (extract commits per shard; the demo run has one)
    prefixes = {"extract": layout.shard_prefix(name, 0, 0, 1), "cluster-select": layout.stage_prefix(name, 0, "cluster-select")}
    for stage in RUN_STAGES:
        marker = store / prefixes[stage] / "_COMMITTED.json"
        assert marker.is_file(), f"no {stage} marker in the mounted store"
        assert (marker.stat().st_uid, marker.stat().st_gid) == (10001, 10001)
        assert json.loads(marker.read_text())["files"], f"{stage} committed no files"
    status = cluster.api.get("lifelongruns", ns, name)["status"]
    assert (status["phase"], status["step"], status["stage"]) == ("Running", 0, "train"), status
    # One pod per Job: nothing was retried.
    assert [j for j, _, _ in kubelet.started_pods[:2]] == jobs
