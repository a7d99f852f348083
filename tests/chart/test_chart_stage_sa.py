"""The guide's layout works: operator in adaptinf-system, runs in `ml` (docs/install.md), stage
ServiceAccount created by the chart. The Jobs the operator builds from the chart's own env, for the
guide's own LifelongRun and dataset, run pods that the ServiceAccount admission plugin (the API
emulator's, tests/k8s/admission.py) lets in — in every namespace of stage.serviceAccount.namespaces,
and in the watched namespace in namespace mode — and refuses, naming the account, where the chart
made none."""
from __future__ import annotations

import re
import sys
from typing import Any

import pytest
import yaml

from chart_helpers import CHART, REPO, by_kind, container_env, one

K8S = REPO / "tests" / "k8s"
GPU_VALUES = CHART / "values-gpu-cluster.yaml"


def admission():
    if str(K8S) not in sys.path:
        sys.path.insert(0, str(K8S))
    import admission as module  # noqa: E402
    return module


def guide(kind: str) -> dict[str, Any]:
    """The first manifest of `kind` in docs/install.md."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "install.md").read_text(encoding="utf-8"), flags=re.S)
    return next(d for b in blocks for d in yaml.safe_load_all(b) if d and d["kind"] == kind)


def stage_pod(docs: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """The pod of the first stage Job the operator (configured by the chart's env) creates for the
    guide's run, were it in `namespace`."""
    from adaptinf.operator.config import OperatorConfig
    from adaptinf.operator.jobs import build_job

    env = {k: v for k, v in container_env(one(docs, "Deployment")).items() if isinstance(v, str)}
    run, dataset = guide("LifelongRun"), guide("InstructionDataset")
    for obj in (run, dataset):
        obj["metadata"] = {**obj["metadata"], "namespace": namespace, "uid": "u-1"}
    job = build_job(run, 0, "extract", dataset, OperatorConfig.from_env(env))
    template = job["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p-0", **template.get("metadata", {})},
            "spec": template["spec"]}


def admit(docs: list[dict[str, Any]], namespace: str) -> None:
    """The ServiceAccount admission of a real API server, over the chart's objects in `namespace`."""
    def objects(plural: str) -> list[dict[str, Any]]:
        kind = {"serviceaccounts": "ServiceAccount"}.get(plural)
        return [d for d in by_kind(docs, kind) if d["metadata"].get("namespace") == namespace] if kind else []

    admission().admit_create("pods", "", "Pod", stage_pod(docs, namespace), namespace, objects)


def test_the_guides_runs_in_ml_get_the_stage_account(render):
    docs = render((GPU_VALUES,), namespace="adaptinf-system")
    assert guide("LifelongRun")["metadata"]["namespace"] == "ml"
    assert yaml.safe_load(GPU_VALUES.read_text())["stage"]["serviceAccount"]["namespaces"] == ["ml"]
    pod = stage_pod(docs, "ml")
    assert pod["spec"]["serviceAccountName"] == "adaptinf-stage"
    admit(docs, "ml")  # admitted: the chart made the account there


def test_a_namespace_not_listed_is_refused_naming_the_account(render):
    docs = render((GPU_VALUES,), namespace="adaptinf-system")
    with pytest.raises(Exception, match=r'error looking up service account team-b/adaptinf-stage: serviceaccount '
                                        r'"adaptinf-stage" not found'):
        admit(docs, "team-b")
    # Listing it is the fix the docs give (stage.serviceAccount.namespaces).
    admit(render((GPU_VALUES,), ("stage.serviceAccount.namespaces={ml,team-b}",), namespace="adaptinf-system"),
          "team-b")


def test_namespace_mode_puts_the_account_in_the_watched_namespace(render):
    docs = render((), ("watch.mode=namespace", "watch.namespace=ml", "stage.serviceAccount.create=true"),
                  namespace="adaptinf-system")
    admit(docs, "ml")
