"""The chart's RBAC is exactly what the operator uses: no request denied, no permission unused.

A recorded operator session supplies the requests. This module records its own, per watch mode:
it renders the chart, starts the API emulator of tests/k8s (kmock + emulator.py, which writes an
audit log of every request), applies the chart's CRDs, and runs the operator with the chart's
own Deployment command, args and env (only the liveness port and KUBECONFIG changed) next to the
tests/k8s fake kubelet (stages replaced by tests/k8s/fake_stage.py). The session walks the
operator through every API path it has: a pod refused by a quota (FailedCreate events), a step of
five stage Jobs, their pods, status and events,
a dataset naming a missing run, and the deletion of a run (finalizer cleanup deletes its Jobs).
The operator runs with the chart's peering (the rendered peering object is created too), so its
keep-alives are part of the session. The operator's requests (user agents kopf/… and
adaptinf-operator/…) are then checked against the rendered Role/ClusterRole with rbac_check.py.

The e2e tests of tests/k8s record more sessions (restarts, retries, stuck pods, real stages);
`test_e2e_sessions_are_allowed` checks that none of their requests is denied either. It runs
after every other test (see conftest.py) and reads `*audit*.jsonl` under this pytest session's
temp dir, or the files in ADAPTINF_OPERATOR_AUDIT (os.pathsep-separated).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chart_helpers import REPO, by_kind, helm_template, one
from rbac_check import (Request, as_cluster_wide, check, confine_to_namespace, denied, grants_for,
                        is_kopf_optional, requests_from_audit)

K8S = REPO / "tests" / "k8s"
RUN_NS = "team-a"
MODES = {"cluster": (), "namespace": ("watch.mode=namespace", f"watch.namespace={RUN_NS}")}


def _harness():
    """The tests/k8s harness modules (emulator client, kubelet, fake stage)."""
    if str(K8S) not in sys.path:
        sys.path.insert(0, str(K8S))
    import harness  # noqa: E402
    import kubeapi  # noqa: E402
    import kubelet  # noqa: E402
    return harness, kubeapi, kubelet


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGINT, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _operator_grants(docs: list[dict[str, Any]]):
    sa = next(d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"].endswith("-operator"))
    return grants_for(docs, sa["metadata"]["name"], sa["metadata"]["namespace"])


def record_session(helm: str, mode: str, work: Path) -> tuple[list[dict[str, Any]], list[Request]]:
    """Run the chart's operator against the emulator; return (rendered chart, operator requests)."""
    harness, kubeapi, kubelet_mod = _harness()
    wait_for = harness.wait_for
    docs = helm_template(helm, (), MODES[mode], crds=True)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    audit = work / "session-audit.jsonl"
    emulator = operator = kubelet = None
    logs = []
    try:
        emulator, server, kubeconfig = harness.start_emulator(work, audit)
        api = kubeapi.KubeApi(server, "adaptinf-chart-tests")
        for crd in by_kind(docs, "CustomResourceDefinition"):  # the chart's own CRDs
            api.create("customresourcedefinitions", None, crd)
        api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUN_NS}})
        # The chart's peering object: without it the operator (--peering) stays paused.
        for peering in by_kind(docs, "ClusterKopfPeering") + by_kind(docs, "KopfPeering"):
            ns = peering["metadata"].get("namespace")
            api.request("POST", f"/apis/kopf.dev/v1{f'/namespaces/{ns}' if ns else ''}/{peering['kind'].lower()}s",
                        peering)

        # The operator exactly as the chart runs it.
        live = harness.free_port()
        argv = [a for a in container["command"] + container["args"] if not a.startswith("--liveness=")]
        argv.append(f"--liveness=http://127.0.0.1:{live}/healthz")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ADAPTINF_", "KUBECONFIG", "AWS_", "MLFLOW_"))}
        env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
        # Both modes' sessions run side by side: each its own metrics port.
        env.update(KUBECONFIG=str(kubeconfig), ADAPTINF_RECONCILE_INTERVAL="1",
                   ADAPTINF_METRICS_PORT=str(harness.free_port()))
        logs.append((work / "operator.log").open("wb"))
        operator = subprocess.Popen(argv, env=env, stdout=logs[-1], stderr=subprocess.STDOUT, cwd=work)

        def healthy() -> bool:
            if operator.poll() is not None:
                raise AssertionError(f"the operator exited:\n{(work / 'operator.log').read_text()[-3000:]}")
            return harness.liveness_ok(live)

        wait_for(healthy, 60, "the operator's liveness endpoint")
        base_env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "LANG") if k in os.environ}
        kubelet = kubelet_mod.Kubelet(kubeapi.KubeApi(server, "adaptinf-test-kubelet"), work / "kubelet",
                                      extra_env=base_env, command_map={"adaptinf": harness.FAKE_STAGE}).start()

        # One step: five stage Jobs, their pods, run and dataset status, events.
        store = work / "store"
        store.mkdir()
        source = work / "records.jsonl"
        source.write_text(json.dumps({"id": "a", "conversations": [
            {"from": "human", "value": "What colour is the square?"}, {"from": "gpt", "value": "red"}]}) + "\n")
        # A quota of no pods first: the first Job gets none, the operator reads its FailedCreate Event.
        api.create("resourcequotas", RUN_NS, {"apiVersion": "v1", "kind": "ResourceQuota",
                                              "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
        api.create("lifelongruns", RUN_NS, harness.run_manifest("r1", store))
        api.create("instructiondatasets", RUN_NS, harness.dataset_manifest("d0", "r1", source, 0))
        wait_for(lambda: any(c.get("type") == "Stuck" and c.get("reason") == "PodsRefused"
                             for c in (api.get("lifelongruns", RUN_NS, "r1").get("status") or {}).get("conditions", [])),
                 60, "the run to be Stuck with its pods refused")
        api.delete("resourcequotas", RUN_NS, "no-pods")
        wait_for(lambda: (api.get("lifelongruns", RUN_NS, "r1").get("status") or {}).get("stepsCompleted") == 1,
                 90, "step 0 of the run to finish")
        # A dataset for a run that does not exist: status RunFound=False and a Warning event.
        api.create("instructiondatasets", RUN_NS, harness.dataset_manifest("orphan", "no-such-run", source))
        wait_for(lambda: any(c.get("type") == "RunFound" and c.get("status") == "False"
                             for c in (api.get("instructiondatasets", RUN_NS, "orphan").get("status") or {})
                             .get("conditions", [])), 30, "the orphan dataset's RunFound=False")
        # Deleting the run: the finalizer's cleanup deletes its Jobs.
        api.delete("lifelongruns", RUN_NS, "r1")
        wait_for(lambda: api.find("lifelongruns", RUN_NS, "r1") is None, 30, "the run's deletion")
        wait_for(lambda: not api.list("jobs", RUN_NS), 30, "the run's Jobs to be deleted")
    finally:
        if kubelet is not None:
            kubelet.stop()
        _stop(operator)
        _stop(emulator, timeout=5)
        for fh in logs:
            fh.close()
    requests = requests_from_audit(audit.read_text(encoding="utf-8").splitlines())
    assert requests, "the emulator recorded no request from the operator"
    return docs, requests


@pytest.fixture(scope="module")
def sessions(helm, tmp_path_factory) -> dict[str, tuple[list[dict[str, Any]], list[Request]]]:
    """Both watch modes' sessions, recorded side by side (each has its own emulator)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(MODES)) as pool:
        futures = {mode: pool.submit(record_session, helm, mode, tmp_path_factory.mktemp(f"rbac-{mode}"))
                   for mode in MODES}
        return {mode: f.result() for mode, f in futures.items()}


@pytest.fixture(params=list(MODES))
def session(request, sessions):
    return (request.param, *sessions[request.param])


def test_rbac_is_exactly_what_the_operator_uses(session):
    mode, docs, requests = session
    grants = _operator_grants(docs)
    assert grants, "no rules bound to the operator's ServiceAccount"
    if mode == "cluster":
        assert not by_kind(docs, "Role")
        report = check(requests, grants)
        assert report.ok, f"cluster mode:\n{report.message()}"
    else:
        assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
        report = check(requests, grants)
        # Kopf asks for namespaces and CRDs cluster-wide and does without on a 403; a Role can
        # never grant them. Anything else denied is a missing rule.
        hard = [r for r in report.denied if not is_kopf_optional(r)]
        assert not hard and not report.unused, f"namespace mode:\n{report.message()}"
        assert all(r.namespace in (None, RUN_NS) for r in requests)


def test_operator_requests_match_its_mode(session):
    """Sanity of the recording: the chart's args really chose the watch mode."""
    mode, _, requests = session
    watches = [r for r in requests if r.verb == "watch" and r.resource == "lifelongruns"]
    assert watches, "the operator never watched LifelongRuns"
    expected = None if mode == "cluster" else RUN_NS
    assert {r.namespace for r in watches} == {expected}


@pytest.mark.after_operator_e2e
def test_e2e_sessions_are_allowed(helm, tmp_path_factory):
    env = os.environ.get("ADAPTINF_OPERATOR_AUDIT")
    if env:
        logs = [Path(p) for p in env.split(os.pathsep) if p]
        missing = [str(p) for p in logs if not p.is_file()]
        assert not missing, f"ADAPTINF_OPERATOR_AUDIT names missing files: {missing}"
    else:
        logs = [p for p in sorted(tmp_path_factory.getbasetemp().glob("**/*audit*.jsonl"))
                if not p.parent.name.startswith("rbac-")]  # not this module's own sessions
    requests = [r for log in logs for r in requests_from_audit(log.read_text(encoding="utf-8").splitlines())]
    if not requests:
        pytest.skip("no tests/k8s e2e session in this pytest run (its emulator audit logs are read from the "
                    "session's temp dir); this module's own sessions were checked above")
    # Every e2e operator runs with --namespace: check them as a namespace-mode install would
    # (Role in that namespace) and as a cluster-mode one would (ClusterRole).
    ns_docs = helm_template(helm, (), MODES["namespace"])
    ns_requests = confine_to_namespace(requests, RUN_NS)
    hard = [r for r in denied(ns_requests, _operator_grants(ns_docs)) if not is_kopf_optional(r)]
    assert not hard, "namespace mode denies requests of the e2e sessions:\n" + "\n".join(map(str, hard))
    cl_docs = helm_template(helm, (), MODES["cluster"])
    cl_denied = denied(as_cluster_wide(requests), _operator_grants(cl_docs))
    assert not cl_denied, "cluster mode denies requests of the e2e sessions:\n" + "\n".join(map(str, cl_denied))
