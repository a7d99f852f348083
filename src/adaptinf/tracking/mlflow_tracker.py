"""MLflow tracking: one parent run per LifelongRun, one child run per step.

Stages run as separate processes (pods), so run ids are found, not remembered: the parent id
is kept in the artifact store (`layout.tracking_key`) and children are found by tag. Only
client calls are used (no `mlflow.start_run` global state), so a stage never ends a run by
accident; the prune stage, last of a step, marks the child FINISHED. A failed or killed stage
marks it FAILED/KILLED (stages/tracking_guard.py); its retry sets it RUNNING again, so a step
keeps exactly one child run however often it is retried.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .. import layout
from ..store import Store

log = logging.getLogger(__name__)

RUN_TAG = "adaptinf.run"
STEP_TAG = "adaptinf.step"


def _flatten(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)
    return out


class Tracker:
    """Logs to MLflow; every call is a no-op when tracking is off (`uri=None`)."""

    def __init__(self, uri: str | None, experiment: str, run: str, store: Store):
        self.uri, self.experiment_name, self.run, self.store = uri, experiment, run, store
        self._client = None
        self._experiment_id: str | None = None

    @property
    def enabled(self) -> bool:
        return self.uri is not None

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient
            if redact_uri(self.uri) != self.uri:  # MLflow prints run URLs, credentials included
                os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            self._experiment_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment_name)
        return self._experiment_id

    def parent_id(self, params: dict[str, Any] | None = None) -> str | None:
        if not self.enabled:
            return None
        key = layout.tracking_key(self.run)
        if self.store.exists(key):
            return self.store.read_json(key)["parent_run_id"]
        found = self.client.search_runs([self._experiment()], filter_string=f"tags.`{RUN_TAG}` = '{self.run}' "
                                        f"and tags.`{STEP_TAG}` = 'parent'", max_results=1)
        if found:
            rid = found[0].info.run_id
        else:
            rid = self.client.create_run(self._experiment(), run_name=self.run,
                                         tags={RUN_TAG: self.run, STEP_TAG: "parent"}).info.run_id
            for k, v in list(_flatten("", params or {}, {}).items())[:500]:
                self.client.log_param(rid, k, v[:6000])
        self.store.write_json(key, {"parent_run_id": rid, "experiment_id": self._experiment(), "tracking_uri": redact_uri(self.uri)})
        return rid

    def find_step(self, step: int) -> Any | None:
        """The child run of `step` if one exists (never creates it)."""
        if not self.enabled:
            return None
        found = self.client.search_runs([self._experiment()], filter_string=f"tags.`{RUN_TAG}` = '{self.run}' "
                                        f"and tags.`{STEP_TAG}` = '{step}'", max_results=1)
        return found[0] if found else None

    def step_id(self, step: int, dataset: str) -> str | None:
        """The step's one child run: found by tag, created on first use, and set RUNNING again
        when an earlier attempt of the step failed or was killed (a retry resumes the same run)."""
        if not self.enabled:
            return None
        parent = self.parent_id()
        found = self.find_step(step)
        if found is not None:
            if found.info.status in ("FAILED", "KILLED"):
                log.info("MLflow run %s of step %d was %s: resumed", found.info.run_id, step, found.info.status)
                self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        return self.client.create_run(self._experiment(), run_name=f"{self.run}-step-{step}-{dataset}",
                                      tags={RUN_TAG: self.run, STEP_TAG: str(step), "adaptinf.dataset": dataset,
                                            "mlflow.parentRunId": parent}).info.run_id

    def mark_step(self, step: int, status: str) -> bool:
        """End the step's child run with `status` if it is RUNNING (a stage failed or was killed)."""
        found = self.find_step(step)
        if found is None or found.info.status != "RUNNING":
            return False
        self.client.set_terminated(found.info.run_id, status)
        return True

    def retire_step(self, step: int) -> None:
        """The step is being run again from scratch: its old child run stops answering to the
        step's tag (so the rerun gets a fresh one) and is kept, marked KILLED, for the record."""
        found = self.find_step(step)
        if found is None:
            return
        self.client.set_tag(found.info.run_id, STEP_TAG, f"{step}-replaced")
        if found.info.status == "RUNNING":
            self.client.set_terminated(found.info.run_id, "KILLED")

    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int) -> None:
        if run_id is None:
            return
        for k, v in metrics.items():
            if v is not None:
                self.client.log_metric(run_id, k.replace("/", "."), float(v), step=step)

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if run_id is None:
            return
        for k, v in _flatten("", params, {}).items():
            self.client.log_param(run_id, k, v[:6000])

    def log_dict(self, run_id: str | None, obj: Any, name: str) -> None:
        if run_id is not None:
            self.client.log_dict(run_id, obj, name)

    def log_artifacts(self, run_id: str | None, local: str | Path, path: str | None = None) -> None:
        if run_id is None:
            return
        local = Path(local)
        if local.is_dir():
            self.client.log_artifacts(run_id, str(local), path)
        else:
            self.client.log_artifact(run_id, str(local), path)

    def log_figure(self, run_id: str | None, fig: Any, name: str) -> None:
        if run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            fig.savefig(path, dpi=110, bbox_inches="tight")
            self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None:
            self.client.set_terminated(run_id, status)

    def fail_open_runs(self, except_step: int | None = None, status: str = "FAILED") -> int:
        """Mark this run's children left RUNNING by a crashed stage (a SIGKILL or an OOM kill
        cannot mark its own) as FAILED, except `except_step`'s; returns how many."""
        if not self.enabled:
            return 0
        runs = self.client.search_runs([self._experiment()], filter_string=f"tags.`{RUN_TAG}` = '{self.run}' "
                                       f"and attributes.status = 'RUNNING' and tags.`{STEP_TAG}` != 'parent'")
        stale = [r for r in runs if r.data.tags.get(STEP_TAG) != str(except_step)]
        for r in stale:
            log.warning("MLflow run %s (step %s) was left RUNNING by a crashed stage: marked %s",
                        r.info.run_id, r.data.tags.get(STEP_TAG), status)
            self.client.set_terminated(r.info.run_id, status)
        return len(stale)


_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")


# A Hugging Face access token (user and org tokens alike), as it may be quoted in a hub error.
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


def redact_uri(uri: str | None) -> str | None:
    """The URI (or any text holding URIs) without the `user:password@` MLflow accepts in a
    tracking URI, nor a Hugging Face token (HF_TOKEN's value or anything shaped like one): safe
    to print, log and store."""
    if not uri:
        return uri
    clean = _HF_TOKEN.sub("hf_***", _USERINFO.sub(r"\1***@", uri))
    token = os.environ.get("HF_TOKEN", "")
    return clean.replace(token, "***") if len(token) >= 8 else clean


class RedactingFilter:
    """A logging filter: no log line carries a URI's credentials (MLflow and urllib3 errors quote
    it) or a Hugging Face token."""

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        clean = redact_uri(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def tracking_uri(spec_uri: str | None) -> str | None:
    """The environment wins over the spec, so a cluster can point every run at its server."""
    return os.environ.get("MLFLOW_TRACKING_URI") or spec_uri
