"""The cluster commands of the README, docs/install.md and docs/operator.md, run as written with the
real `kubectl` and `helm` against the API emulator (tests/doc_commands.py lists them and says how
each is tested; tests/test_readme_commands.py checks that list is exhaustive).

Each scenario starts its own emulator with nothing in it. What a real cluster would add, the test
adds, and only that:

- the operator: `helm install` creates the chart's Deployment, and deployment_pod.py runs its
  container's argv and env as its pod would (ports mapped to free local ports, a kubeconfig in
  place of the in-cluster token, ADAPTINF_RECONCILE_INTERVAL=1 so a test waits seconds);
- a GPU node: the kubelet (kubelet.py) labelled `nvidia.com/gpu.present=true`, the node selector of
  values-gpu-cluster.yaml, running every stage Job with tests/k8s/fake_stage.py in place of
  `adaptinf stage` (same argv, env and store markers; seconds instead of minutes);
- S3 and MLflow: a local moto server as the bucket (`storage.s3.endpoint` in my-values.yaml, a
  non-AWS S3 as the docs allow) and a real `mlflow server` as `mlflow.trackingUri` — the two
  edits of my-values.yaml its comment asks for (`edit_values`);
- the demo stream's paths changed to s3:// URIs, as the README says to (`to_s3_uris`), and the
  quick stream (`--size quick`) in place of the default one: the fake stages read no records.

Placeholders (`<run>`, `<dataset>`, `<step>`) are filled in; docs/operator.md's commands, which
name no namespace, run with a kubeconfig whose current namespace is `ml`. Everything else is the
docs' text.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import warnings
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest
import yaml

import doc_commands as docs
from adaptinf.layout import STAGES, summary_key
from adaptinf.operator.jobs import job_name
from deployment_pod import DeploymentPod
from doc_commands import REPO, Scenario, run, substitute, user_env
from harness import FAKE_STAGE, hold, start_emulator, wait_for
from kubeapi import KubeApi
from kubelet import Kubelet

pytestmark = pytest.mark.slow

BUCKET = "adaptinf-artifacts"  # the docs' bucket
DEMO_URI = f"s3://{BUCKET}/demo"  # where the docs sync the demo stream
GPU_NODE = {"nvidia.com/gpu.present": "true"}  # values-gpu-cluster.yaml's stage.nodeSelector
OPERATOR = ("adaptinf-system", "adaptinf-operator")  # the chart's Deployment


def _helm() -> str:
    local = REPO / ".cache" / "bin" / "helm"
    found = str(local) if local.is_file() else shutil.which("helm")
    if found is None:
        pytest.skip("no helm binary: run `tools/get-helm.sh` (installs the pinned helm into .cache/bin/helm)")
    return found


class Cluster:
    """One scenario's emulated cluster, the user's shell around it, and the stand-ins above."""

    def __init__(self, work: Path, selectable_fields: bool = True):
        self.work = work
        self.user = work / "user"  # the user's checkout: the repository's charts, crds and tools
        self.user.mkdir()
        for name in ("charts", "crds", "tools"):
            (self.user / name).symlink_to(REPO / name)
        self.emulator, self.server, self.kubeconfig = start_emulator(work, work / "api-requests.jsonl",
                                                                     selectable_fields)
        self.api = KubeApi(self.server)
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["contexts"][0]["context"]["namespace"] = "ml"
        self.kubeconfig_ml = work / "kubeconfig-ml"
        self.kubeconfig_ml.write_text(yaml.safe_dump(config))
        self.hooks = work / "hooks"  # fake_stage.py's test hooks (the store is S3)
        self.hooks.mkdir()
        self.env = user_env(KUBECONFIG=str(self.kubeconfig),
                            PATH=f"{Path(_helm()).parent}{os.pathsep}{os.environ['PATH']}")
        self.operator: DeploymentPod | None = None
        self.kubelet: Kubelet | None = None

    def sh(self, cmd: docs.Command | str, *subs: tuple[str, str], cwd: Path | None = None,
           kubeconfig: Path | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        text = substitute(cmd if isinstance(cmd, str) else cmd.text, *subs)
        env = {**self.env, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
        return run(text, cwd or self.user, env, timeout=timeout, check=check)

    def watch(self, cmd: docs.Command, until: Callable[[list[str]], bool], cwd: Path | None = None,
              timeout: float = 60) -> list[str]:
        """Run a `-w` command and read its output until `until(lines)`; then stop it."""
        proc = subprocess.Popen(["bash", "-c", f"exec {cmd.text}"], cwd=cwd or self.user, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            wait_for(lambda: until([line.rstrip("\n") for line in lines]), timeout, f"`{cmd.text}` to show it")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the watch this test started
            proc.wait(timeout=10)
            reader.join(timeout=5)
        return [line.rstrip("\n") for line in lines]

    def start_operator(self) -> DeploymentPod:
        """The chart's Deployment, run as its pod (see the module docstring)."""
        base = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "LANG") if k in os.environ}
        base.update(KUBECONFIG=str(self.kubeconfig), ADAPTINF_RECONCILE_INTERVAL="1")
        self.operator = DeploymentPod(KubeApi(self.server, "adaptinf-test-controller"), *OPERATOR,
                                      self.work / "operator", base).start()
        return self.operator

    def start_gpu_node(self) -> Kubelet:
        base = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "LANG", "ADAPTINF_THREADS", "OMP_NUM_THREADS")
                if k in os.environ}
        self.kubelet = Kubelet(KubeApi(self.server, "adaptinf-test-kubelet"), self.work / "kubelet",
                               extra_env={**base, "FAKE_STAGE_HOOKS": str(self.hooks)},
                               command_map={"adaptinf": FAKE_STAGE}, node_labels=GPU_NODE).start()
        return self.kubelet

    def diagnose(self) -> str:
        parts = []
        if self.operator is not None:
            parts.append("--- operator\n" + self.operator.logs()[-4000:])
        if self.kubelet is not None:
            for _, pod, _ in self.kubelet.started_pods[-3:]:
                parts.append(f"--- {pod}\n{self.kubelet.log_of(pod)[-1500:]}")
        return "\n".join(parts)

    def close(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
        if self.operator is not None:
            self.operator.stop()
        self.emulator.send_signal(signal.SIGINT)
        try:
            self.emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.emulator.kill()


@pytest.fixture
def new_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(name: str = "cluster", selectable_fields: bool = True) -> Cluster:
        work = tmp_path / name
        work.mkdir()
        made.append(Cluster(work, selectable_fields))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def bucket(s3_endpoint: str) -> dict[str, str]:
    """The docs' bucket in the local S3, and the environment that reaches it (aws CLI, boto3)."""
    import boto3

    env = {"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return env


def _s3_keys(bucket_env: dict[str, str], prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=bucket_env["AWS_ENDPOINT_URL_S3"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def edit_values(path: Path, s3_endpoint: str, mlflow_uri: str) -> None:
    """What my-values.yaml's comment asks a user to edit, for this cluster: the S3 endpoint of
    the local S3 (bucket, prefix and Secret names stay the example's) and the MLflow server."""
    values = yaml.safe_load(path.read_text())
    values["storage"]["s3"]["endpoint"] = s3_endpoint
    values["mlflow"]["trackingUri"] = mlflow_uri
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def to_s3_uris(demo: Path, uri: str) -> None:
    """The demo stream's YAML files with every path changed to its s3:// URI after `aws s3 sync
    demo <uri>` — resolved as the product resolves relative paths (against the file's folder)."""
    from adaptinf.spec import load_resources, to_manifest

    for path in [demo / "lifelongrun.yaml", *sorted((demo / "datasets").glob("*.yaml"))]:
        (res,) = load_resources(path)
        obj = to_manifest(res)
        obj["metadata"].pop("namespace", None)
        text = json.dumps(res.resolved_spec().to_dict())
        obj["spec"] = json.loads(text.replace(json.dumps(str(demo.resolve()))[1:-1], uri))
        assert str(demo.resolve()) not in json.dumps(obj), f"{path}: a path outside the stream"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))


def _columns(lines: list[str]) -> list[str]:
    return lines[0].split()


def _row(lines: list[str], name: str) -> dict[str, str]:
    header = _columns(lines)
    for line in lines[1:]:
        cells = line.split()
        if cells[header.index("NAME")] == name:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {name!r} in:\n" + "\n".join(lines))


def _sync_demo(c: Cluster, bucket_env: dict[str, str], scenario: Scenario | None) -> Path:
    """docs/install.md §5: the demo stream (quick) synced to the docs' bucket."""
    take = scenario.take if scenario else lambda doc, pattern: _find(doc, pattern)
    c.sh(take("docs/install.md", r"^adaptinf demo-data --out demo$"), ("--out demo", "--out demo --size quick"),
         timeout=300)
    sync = take("docs/install.md", r"^aws s3 sync demo ")
    if shutil.which("aws", path=c.env["PATH"]) is None:  # not a dependency of the project
        warnings.warn(f"no aws CLI: `{sync.text}` was not run (the fake stages read no records)", stacklevel=2)
    else:
        c.env.update(bucket_env)
        c.sh(sync, timeout=300)
        # Every local file is in the bucket (other tests of this worker share the bucket, so it
        # may hold more under demo/, e.g. a run's artifacts).
        local = {f"demo/{p.relative_to(c.user / 'demo')}" for p in (c.user / "demo").rglob("*") if p.is_file()}
        assert local and local <= set(_s3_keys(bucket_env, "demo/"))
    return c.user / "demo"


def _find(doc: str, pattern: str) -> docs.Command:
    """A command a scenario needs as a prerequisite (another scenario tests it)."""
    (found,) = [cmd for cmd in docs.commands(doc) if re.search(pattern, cmd.text)]
    return found


def _install_secrets(c: Cluster, scenario: Scenario | None) -> None:
    """docs/install.md §3, in order."""
    take = scenario.take if scenario else lambda doc, pattern: _find(doc, pattern)
    for pattern in (r"^kubectl create namespace adaptinf-system", r"^kubectl create namespace ml",
                    r"^for ns in ", r"create secret generic adaptinf-mlflow", r"create secret generic hf-gated"):
        c.sh(take("docs/install.md", pattern))


def _wait_running_operator(c: Cluster) -> None:
    assert c.operator is not None
    wait_for(lambda: c.operator is not None and c.operator.proc is not None and c.operator._ready(c.operator.template),
             90, "the operator's pod to be ready")


# ---- README.md ------------------------------------------------------------------------------------

def test_readme_cluster_commands(new_cluster, bucket, s3_endpoint, mlflow_server):
    scenario = Scenario(docs.README_CLUSTER)
    c = new_cluster()
    try:
        # "Credentials go into Secrets that you create in the namespaces adaptinf-system and ml"
        _install_secrets(c, None)
        c.sh(scenario.take("README.md", r"^cp charts/adaptinf/values-gpu-cluster.yaml"))
        edit_values(c.user / "my-values.yaml", s3_endpoint, mlflow_server)
        out = c.sh(scenario.take("README.md", r"^helm install ")).stdout
        assert "STATUS: deployed" in out
        c.start_operator()
        c.start_gpu_node()
        _wait_running_operator(c)

        # "Apply the examples (the demo stream, synced to S3, with its paths changed to s3:// URIs)"
        demo = _sync_demo(c, bucket, None)
        to_s3_uris(demo, DEMO_URI)
        run_name = yaml.safe_load((demo / "lifelongrun.yaml").read_text())["metadata"]["name"]
        out = c.sh(scenario.take("README.md", r"^kubectl apply -n ml -f lifelongrun.yaml"), cwd=demo).stdout
        assert out.strip() == f"lifelongrun.adaptinf.dev/{run_name} created"
        out = c.sh(scenario.take("README.md", r"^kubectl apply -n ml -f datasets/"), cwd=demo).stdout
        names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted((demo / "datasets").glob("*.yaml"))]
        # "one InstructionDataset per step, created in file order (00-, 01-, …)"
        assert out.split() == [w for n in names for w in (f"instructiondataset.adaptinf.dev/{n}", "created")]
        created = [json.loads(line)["name"] for line in (c.work / "api-requests.jsonl").read_text().splitlines()
                   if '"instructiondatasets"' in line and '"verb": "create"' in line]
        assert created == names

        # "STEP, STAGE, PHASE, POOL, AVGACC, FORGETTING, AGE (-o wide: STRATEGY)"
        get = scenario.take("README.md", r"^kubectl get lifelongruns -n ml -w")
        said = re.search(r"# ([A-Z, ]+) \(-o wide: ([A-Z, ]+)\)", get.text)
        assert said, get.text
        lines = c.watch(get, lambda ls: any(line.split()[:1] == [run_name] for line in ls[1:]))
        assert _columns(lines) == ["NAME", *said[1].split(", ")]
        wide = c.sh(substitute(get.text.split("#")[0], (" -w", " -o wide"))).stdout.splitlines()
        assert _columns(wide) == ["NAME", *said[1].split(", ")[:-1], *said[2].split(", "), "AGE"]

        wait = scenario.take("README.md", r"^kubectl wait -n ml --for=condition=StepSucceeded")
        try:
            out = c.sh(wait, timeout=180).stdout
        except (AssertionError, subprocess.TimeoutExpired):
            raise AssertionError(f"the step did not succeed:\n{c.diagnose()}") from None
        assert out.strip() == f"instructiondataset.adaptinf.dev/{names[1]} condition met"
        # "Steps follow the order in which datasets arrive"
        ids = c.sh("kubectl get instructiondatasets -n ml").stdout.splitlines()
        assert [_row(ids, n)["STEP"] for n in names[:2]] == ["0", "1"]

        # Upgrade: CRDs first, then the release; the running run goes on under the new operator.
        out = c.sh(scenario.take("README.md", r"^kubectl apply --server-side --force-conflicts")).stdout
        assert "lifelongruns.adaptinf.dev serverside-applied" in out
        out = c.sh(scenario.take("README.md", r"^helm upgrade ")).stdout
        assert 'Release "adaptinf" has been upgraded' in out
        steps_before = int(c.api.get("lifelongruns", "ml", run_name)["status"]["stepsCompleted"])
        wait_for(lambda: int(c.api.get("lifelongruns", "ml", run_name)["status"]["stepsCompleted"]) > steps_before,
                 120, "a step to finish after the upgrade")

        # Uninstall: runs first (their Jobs go, their finalizers are released), then the operator, then the CRDs.
        c.sh(scenario.take("README.md", r"^kubectl delete lifelongruns,instructiondatasets"), timeout=180)
        assert not c.api.list("lifelongruns", "ml") and not c.api.list("instructiondatasets", "ml")
        wait_for(lambda: not c.api.list("jobs", "ml"), 30, "the run's Jobs to be deleted")
        out = c.sh(scenario.take("README.md", r"^helm uninstall ")).stdout
        assert 'release "adaptinf" uninstalled' in out
        wait_for(lambda: c.operator is not None and c.operator.deleted, 30, "the operator's pod to stop")
        out = c.sh(scenario.take("README.md", r"^kubectl delete crd ")).stdout
        assert "lifelongruns.adaptinf.dev" in out and "instructiondatasets.adaptinf.dev" in out
        assert c.api.find("customresourcedefinitions", None, "lifelongruns.adaptinf.dev") is None
        # "the data in S3 and the MLflow runs are never deleted by adaptinf"
        assert _s3_keys(bucket, f"demo/artifacts/{summary_key(run_name)}")
    except AssertionError as err:
        if "\n--- operator" not in str(err):
            raise AssertionError(f"{err}\n{c.diagnose()}") from None
        raise
    scenario.assert_all_taken()


# ---- docs/install.md and docs/operator.md ---------------------------------------------------------------

def _operator_md(c: Cluster, scenario: Scenario, pattern: str, *subs: tuple[str, str]) -> str:
    """A docs/operator.md command (they name no namespace): with the kubeconfig's namespace ml."""
    try:
        return c.sh(scenario.take("docs/operator.md", pattern), *subs, kubeconfig=c.kubeconfig_ml, timeout=300).stdout
    except (AssertionError, subprocess.TimeoutExpired) as err:
        raise AssertionError(f"{err}\n{c.diagnose()}") from None


def test_install_guide_and_operator_commands(new_cluster, bucket, s3_endpoint, mlflow_server):
    scenario = Scenario(docs.INSTALL_GUIDE)
    c = new_cluster()
    install = "docs/install.md"

    # §3 Namespaces and Secrets.
    _install_secrets(c, scenario)
    secrets = {ns: {s["metadata"]["name"]: sorted(s.get("data", {})) for s in c.api.list("secrets", ns)}
               for ns in ("adaptinf-system", "ml")}
    assert secrets == {
        "adaptinf-system": {"adaptinf-s3": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]},
        "ml": {"adaptinf-s3": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
               "adaptinf-mlflow": ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME"], "hf-gated": ["HF_TOKEN"]}}

    # §4 Install the chart.
    c.sh(scenario.take(install, r"^cp charts/adaptinf/values-gpu-cluster.yaml"))
    edit_values(c.user / "my-values.yaml", s3_endpoint, mlflow_server)
    assert "STATUS: deployed" in c.sh(scenario.take(install, r"^helm install adaptinf charts/adaptinf -n adaptinf-system -f my-values.yaml$")).stdout
    operator = c.start_operator()
    c.start_gpu_node()
    out = c.sh(scenario.take(install, r"rollout status"), timeout=120).stdout
    assert 'deployment "adaptinf-operator" successfully rolled out' in out
    # docs/operator.md: "kopf run -m adaptinf.operator.main --peering=adaptinf -A --liveness=…" is
    # the Deployment's argv (-A = --all-namespaces; the chart adds --priority and --log-format).
    kopf = scenario.take("docs/operator.md", r"^kopf run -m adaptinf.operator.main")
    argv = kopf.text.replace("\\\n", " ").split("#")[0].split()
    container = c.api.get("deployments", *OPERATOR)["spec"]["template"]["spec"]["containers"][0]
    chart_argv = container["command"] + container["args"]
    assert argv[:4] == chart_argv[:4] == ["kopf", "run", "-m", "adaptinf.operator.main"]
    assert {a.replace("-A", "--all-namespaces") for a in argv[4:]} <= set(chart_argv[4:])

    # §5 Run something: the demo stream in S3, the doc's LifelongRun and InstructionDataset.
    _sync_demo(c, bucket, scenario)
    (manifests,) = [b for b in docs.blocks(install) if b.lang == "yaml" and "name: demo-00" in b.text]
    (c.user / "demo-run.yaml").write_text(manifests.text)
    out = c.sh("kubectl apply -f demo-run.yaml").stdout
    assert out.split() == ["lifelongrun.adaptinf.dev/demo", "created", "instructiondataset.adaptinf.dev/demo-00",
                           "created"]
    run_name, first = "demo", "demo-00"
    _operator_md(c, scenario, r"^kubectl wait --for=condition=StepSucceeded ids/<dataset>", ("<dataset>", first))

    # §6 Watch.
    watch = scenario.take(install, r"^kubectl get lifelongruns -A -w")
    lines = c.watch(watch, lambda ls: any(f" {run_name} " in f" {line} " and "Succeeded" in line for line in ls))
    said = re.search(r"— ([A-Z, ]+) columns", watch.text)
    assert said and set(said[1].split(", ")) <= set(_columns(lines))
    # docs/operator.md shows `kubectl get llr` as its text block: the same columns.
    (shown,) = [b for b in docs.blocks("docs/operator.md") if b.lang == "text" and b.text.startswith("NAME")]
    llr = c.sh("kubectl get llr -n ml").stdout.splitlines()
    assert _columns(llr) == shown.text.splitlines()[0].split()
    ids = c.sh(scenario.take(install, r"^kubectl get instructiondatasets -n ml")).stdout.splitlines()
    assert _row(ids, first)["STEP"] == "0"  # "which step each dataset became"
    described = c.sh(scenario.take(install, r"^kubectl describe lifelongrun demo")).stdout
    said = re.search(r"# conditions \(([\w, ]+)\) and events", _find(install, r"^kubectl describe lifelongrun").text)
    assert said and all(re.search(rf"^\s+Type:\s+{t}$", described, re.M) for t in said[1].split(", ")), described
    assert "Events:" in described and "StageSucceeded" in described
    listed = c.sh(scenario.take(install, r"^kubectl get jobs,pods -n ml")).stdout
    jobs = re.findall(r"^job\.batch/(\S+)", listed, re.M)
    assert jobs == sorted(job_name(run_name, 0, s) for s in STAGES)  # "Jobs <run>-s<step>-<stage>"
    assert all(j == f"{run_name}-s0-{j.rsplit('-s0-', 1)[1]}" for j in jobs)
    assert len(re.findall(r"^pod/", listed, re.M)) == len(STAGES)

    # docs/operator.md: a failed step, its retry, a suspend.
    (c.hooks / "_fail").mkdir()
    (c.hooks / "_fail" / "train-1").write_text("2")  # exit code 2: bad input, the Job fails at once
    c.sh(f"kubectl apply -f {_next_dataset(c, manifests.text, 1, '01-spatial')}")
    _operator_md(c, scenario, r"^kubectl wait --for=condition=Failed llr/<run>", ("<run>", run_name))
    assert c.api.get("lifelongruns", "ml", run_name)["status"]["failure"]["stage"] == "train"
    (c.hooks / "_fail" / "train-1").unlink()
    annotate = scenario.take("docs/operator.md", r"^kubectl annotate llr <run>")
    out = c.sh(annotate, ("<run>", run_name), ("<step>", "1"), kubeconfig=c.kubeconfig_ml).stdout
    assert out.strip() == f"lifelongrun.adaptinf.dev/{run_name} annotated"
    _operator_md(c, scenario, r"^kubectl wait --for=condition=StepSucceeded ids/<dataset>", ("<dataset>", "demo-01"))
    _operator_md(c, scenario, r"^kubectl wait --for=condition=UpToDate llr/<run>", ("<run>", run_name))

    held = hold(c.hooks, "extract", 2)  # step 2's extract runs until released
    c.sh(f"kubectl apply -f {_next_dataset(c, manifests.text, 2, '02-french')}")
    wait_for(lambda: c.api.find("jobs", "ml", job_name(run_name, 2, "extract")), 60, "step 2's extract Job")
    c.sh(f"kubectl patch llr {run_name} -n ml --type=merge -p '{{\"spec\":{{\"suspend\":true}}}}'")
    _operator_md(c, scenario, r"Suspended llr/<run>", ("<run>", run_name))
    wait_for(lambda: c.api.find("jobs", "ml", job_name(run_name, 2, "extract")) is None, 30,
             "the suspended stage's Job to be deleted")
    c.sh(f"kubectl patch llr {run_name} -n ml --type=merge -p '{{\"spec\":{{\"suspend\":false}}}}'")
    running = wait_for(lambda: c.api.find("jobs", "ml", job_name(run_name, 2, "extract")), 60,
                       "step 2's extract Job after the resume")

    # The operator's metrics and peering record (install.md §4).
    metrics = c.sh(scenario.take(install, r"^curl -s localhost:9090/metrics"),
                   ("localhost:9090", f"localhost:{operator.ports[9090]}")).stdout.splitlines()
    prose = (REPO / install).read_text()
    named = set(re.findall(r"`(adaptinf_[a-z_]+)(?:\{\w+\})?`", prose.split("Its metrics (", 1)[1].split(")", 1)[0]))
    named = {n.removesuffix("_total") for n in named}  # a counter's samples: <name>_total, <name>_created
    families = {re.sub(r"_(bucket|sum|count|created|total)$", "", m.split("{")[0].split()[0]) for m in metrics}
    assert families and families <= named, (families, named)
    assert any(m.startswith("adaptinf_runs{") and 'phase="Running"' in m for m in metrics), metrics
    peering = yaml.safe_load(c.sh(scenario.take(install, r"^kubectl get clusterkopfpeering")).stdout)
    assert [v["priority"] for v in peering["status"].values()] == [0]  # "the live operators, their priority"

    # §7 Upgrade: running Jobs keep running; the new operator picks the run up.
    out = c.sh(scenario.take(install, r"^kubectl apply --server-side --force-conflicts")).stdout
    assert "instructiondatasets.adaptinf.dev serverside-applied" in out
    out = c.sh(scenario.take(install, r"^helm upgrade ")).stdout
    assert 'Release "adaptinf" has been upgraded' in out and "REVISION: 2" in out
    assert c.api.get("jobs", "ml", running["metadata"]["name"])["metadata"]["uid"] == running["metadata"]["uid"]
    held.unlink()
    _operator_md(c, scenario, r"^kubectl wait --for=condition=StepSucceeded ids/<dataset>", ("<dataset>", "demo-02"))

    # §8 Uninstall, and what happens to what.
    c.sh(scenario.take(install, r"^kubectl delete lifelongruns,instructiondatasets"), timeout=180)
    assert not c.api.list("lifelongruns", "ml") and not c.api.list("jobs", "ml")
    out = c.sh(scenario.take(install, r"^helm uninstall ")).stdout
    assert 'release "adaptinf" uninstalled' in out
    wait_for(lambda: operator.deleted, 30, "the operator's pod to stop")
    assert c.api.find("customresourcedefinitions", None, "lifelongruns.adaptinf.dev")  # CRDs: kept
    assert {s["metadata"]["name"] for s in c.api.list("secrets", "ml")} >= {"adaptinf-s3", "adaptinf-mlflow"}
    assert _s3_keys(bucket, f"runs/{summary_key(run_name)}")  # data in S3: never deleted
    c.sh(scenario.take(install, r"^kubectl delete crd "))
    assert c.api.find("customresourcedefinitions", None, "lifelongruns.adaptinf.dev") is None
    assert c.api.find("customresourcedefinitions", None, "clusterkopfpeerings.kopf.dev")  # kept, as §8 says
    scenario.assert_all_taken()


def test_install_on_kubernetes_before_1_30(new_cluster):
    """docs/install.md §4 "Kubernetes 1.27–1.29": strict validation refuses the CRD; relaxed, it installs."""
    scenario = Scenario(docs.INSTALL_OLD_K8S)
    c = new_cluster(selectable_fields=False)
    c.sh(_find("docs/install.md", r"^cp charts/adaptinf/values-gpu-cluster.yaml"))
    refused = c.sh(_find("docs/install.md", r"^helm install adaptinf charts/adaptinf -n adaptinf-system -f my-values.yaml$"), check=False)
    assert refused.returncode != 0 and 'unknown field "spec.versions[0].selectableFields"' in refused.stderr
    out = c.sh(scenario.take("docs/install.md", r"^kubectl apply --validate=warn")).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/instructiondatasets.adaptinf.dev created" in out
    crd = c.api.get("customresourcedefinitions", None, "instructiondatasets.adaptinf.dev")
    assert "selectableFields" not in crd["spec"]["versions"][0]  # "the server then drops the field"
    out = c.sh(scenario.take("docs/install.md", r"--skip-crds$")).stdout
    assert "STATUS: deployed" in out
    assert c.api.find("deployments", *OPERATOR) is not None
    scenario.assert_all_taken()


def test_single_namespace_install(new_cluster):
    """docs/install.md §4: a namespace-mode operator with a Role, once the CRDs exist."""
    scenario = Scenario(docs.INSTALL_ONE_NAMESPACE)
    c = new_cluster()
    c.sh("kubectl apply -f charts/adaptinf/crds/")  # "once the CRDs exist"
    c.sh(_find("docs/install.md", r"^cp charts/adaptinf/values-gpu-cluster.yaml"))
    out = c.sh(scenario.take("docs/install.md", r"--set watch.mode=namespace")).stdout
    assert "STATUS: deployed" in out
    deployment = c.api.get("deployments", "ml", "adaptinf-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--all-namespaces" not in args
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    assert c.api.request("GET", f"{rbac}/namespaces/ml/roles")["items"]
    assert not c.api.request("GET", f"{rbac}/clusterroles")["items"]  # "no cluster-scoped permission"
    scenario.assert_all_taken()


def _next_dataset(c: Cluster, manifests: str, order: int, source: str) -> str:
    """The doc's InstructionDataset for a later step of the same stream (name, order and source changed)."""
    (dataset,) = [d for d in yaml.safe_load_all(manifests) if d["kind"] == "InstructionDataset"]
    dataset["metadata"]["name"] = f"demo-{order:02d}"
    dataset["spec"].update(order=order, source=f"{DEMO_URI}/datasets/{source}.jsonl")
    path = c.user / f"demo-{order:02d}.yaml"
    path.write_text(yaml.safe_dump(dataset))
    return path.name
