"""A pass reads only its own run's InstructionDatasets, end to end, on two API servers: one that
honours the CRD's `selectableFields` (Kubernetes >= 1.31: the server filters by `spec.run`) and
one from before 1.31 (the field is dropped, the selector refused: the operator falls back, once,
to listing the namespace's datasets and filtering them itself)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptinf.layout import STAGES
from harness import (FAKE_STAGE, Cluster, calls, condition, dataset_manifest, emulated_cluster, run_manifest, status,
                     write_records)

pytestmark = pytest.mark.slow

FALLBACK_LOG = "the API server cannot select InstructionDatasets by spec.run"
RUNS = {"a": ("a0", "a1"), "b": ("b0",)}  # run → its datasets, in step order


@pytest.fixture(scope="module", params=[True, False], ids=["selectable-fields", "before-1.31"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """This module's own emulator (the conftest's `cluster` is replaced here), once per kind of server."""
    with emulated_cluster(tmp_path_factory.mktemp("cluster"), selectable_fields=request.param) as c:
        c.selectable_fields = request.param  # type: ignore[attr-defined]
        yield c


def dataset_lists(cluster: Cluster, ns: str) -> list[dict]:
    """The reconciler's own list requests for InstructionDatasets in `ns` (not Kopf's watch)."""
    return [e for e in cluster.audit_entries() if (e["verb"], e["resource"], e["namespace"]) ==
            ("list", "instructiondatasets", ns) and e["userAgent"].startswith("adaptinf-operator")]


def test_a_pass_lists_only_its_runs_datasets(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                             tmp_path: Path) -> None:
    ns, selectable = namespace, cluster.selectable_fields  # type: ignore[attr-defined]
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    op = start_operator()
    # Two runs and a stray dataset share the namespace: 4 datasets, at most 2 of them any run's.
    manifests = [dataset_manifest("stray", "ghost", tmp_path / "x.jsonl")]
    for run, datasets in RUNS.items():
        (tmp_path / run).mkdir()
        manifests.append(run_manifest(run, tmp_path / run))
        manifests += [dataset_manifest(d, run, write_records(tmp_path / f"{d}.jsonl", 5), order=i)
                      for i, d in enumerate(datasets)]
    cluster.apply(*manifests, namespace=ns)
    for run in RUNS:
        cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=90s")

    # Either way each run learned exactly its own datasets, each once, in order.
    for run, datasets in RUNS.items():
        for step, d in enumerate(datasets):
            s = status(cluster, ns, "instructiondatasets", d)
            assert (s["run"], s["step"], s["phase"]) == (run, step, "Succeeded"), (d, s)
        assert Counter((c["stage"], c["step"]) for c in calls(tmp_path / run)) == \
            {(s, t): 1 for s in STAGES for t in range(len(datasets))}
    assert "step" not in status(cluster, ns, "instructiondatasets", "stray")

    # Deleting a run (the cleanup path lists its datasets too) orphans its datasets only.
    cluster.kubectl("delete", "llr", "b", "-n", ns, "--timeout=30s")
    assert condition(cluster, ns, "instructiondatasets", "b0", "RunFound")["status"] == "False"
    assert condition(cluster, ns, "instructiondatasets", "a0", "RunFound")["status"] == "True"

    lists = dataset_lists(cluster, ns)
    by_selector = Counter(e["fieldSelector"] for e in lists)
    crd = cluster.api.get("customresourcedefinitions", None, "instructiondatasets.adaptinf.dev")
    if selectable:
        # The API server filters: every list names its run, and no other run's dataset comes back.
        assert set(by_selector) == {"spec.run=a", "spec.run=b"}, by_selector
        assert all("items" in e and e["items"] <= len(RUNS[e["fieldSelector"].split("=")[1]]) for e in lists), lists
        assert FALLBACK_LOG not in op.logs()
        # kubectl users get the same selection.
        got = cluster.kubectl("get", "ids", "-n", ns, "--field-selector", "spec.run=a", "-o", "name").stdout.split()
        assert got == ["instructiondataset.adaptinf.dev/a0", "instructiondataset.adaptinf.dev/a1"], got
    else:
        # The server dropped selectableFields and refuses the selector; the operator found out once
        # (one try per run daemon that raced to it at most) and lists the namespace from then on.
        assert "selectableFields" not in crd["spec"]["versions"][0]
        refused = [e for e in lists if e["fieldSelector"]]
        assert refused and len(refused) <= len(RUNS), refused
        assert [e for e in lists if "code" in e] == refused and {e["code"] for e in refused} == {400}, refused
        whole = [e for e in lists if not e["fieldSelector"]]
        assert whole and all("items" in e for e in whole), whole
        assert max(e["items"] for e in whole) == 4  # everything in the namespace, filtered by the operator
        assert op.logs().count(FALLBACK_LOG) == 1, op.logs()[-3000:]
