"""Pure parts of the operator's fault handling: why a Job's last pod failed, and which watch
events are only the echo of the operator's own writes."""
from __future__ import annotations

from adaptinf.operator.handlers import _echo
from adaptinf.operator.reconcile import FAILURE_ANNOTATION, job_view, pod_failure


def pod(exit_code: int, finished: str, message: str = "", reason: str = "Error") -> dict:
    return {"metadata": {"name": f"p-{finished}"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "stage", "state": {"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": finished,
                                                   "message": message}}}]}}


def failed_job(annotations: dict | None = None) -> dict:
    return {"metadata": {"name": "r-s0-train", "annotations": annotations or {},
                         "labels": {"adaptinf.dev/step": "0", "adaptinf.dev/stage": "train", "adaptinf.dev/dataset": "d"}},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit"}]}}


def test_the_latest_failed_pod_explains_the_failure():
    pods = [pod(1, "2026-01-01T00:00:01Z", "Traceback ...\nRuntimeError: first"),
            pod(137, "2026-01-01T00:00:09Z", "loading\nstep 3/9 " + "x" * 400 + "\n\n"),
            pod(0, "2026-01-01T00:00:05Z", reason="Completed")]
    detail = pod_failure(pods)
    assert detail.startswith("exit code 137 (SIGKILL: out of memory, or the node was lost): step 3/9 xxx")
    assert len(detail) < 400  # the log line is cut, the condition stays small
    assert pod_failure([pod(3, "2026-01-01T00:00:01Z", "", reason="Error")]) == "exit code 3 (Error)"
    assert pod_failure([]) == ""


def test_job_view_appends_the_detail_and_prefers_the_recorded_one():
    view = job_view(failed_job(), [pod(2, "t", "bad input: no usable record")], now=0.0)
    assert view.detail == "exit code 2 (bad input, not retried): bad input: no usable record"
    assert view.message == "Job has reached the specified backoff limit; last attempt: " + view.detail
    recorded = job_view(failed_job({FAILURE_ANNOTATION: "exit code 143 (SIGTERM: …)"}), [], now=0.0)
    assert recorded.message.endswith("last attempt: exit code 143 (SIGTERM: …)")


def test_own_status_writes_are_echoes_but_spec_changes_and_deletions_are_not():
    def body(generation: int, observed: int | None, deleting: bool = False) -> dict:
        meta = {"generation": generation, **({"deletionTimestamp": "t"} if deleting else {})}
        return {"metadata": meta, "status": {} if observed is None else {"observedGeneration": observed}}
    assert _echo({"type": "MODIFIED"}, body(3, 3))
    assert not _echo({"type": "MODIFIED"}, body(4, 3))          # a spec change not yet seen
    assert not _echo({"type": "MODIFIED"}, body(1, None))       # never reconciled
    assert not _echo({"type": "ADDED"}, body(3, 3))             # (re)listed after a restart
    assert not _echo({"type": "MODIFIED"}, body(3, 3, deleting=True))
