"""Each step's adapter as an MLflow model, registered under the run's name.

The model (adapter_model.AdapterModel, a pyfunc) is logged at `model/` of the step's child run;
registering adds it as a new version of the registered model named after the LifelongRun, tagged
with the step, its dataset and the base (id/URI and revision), and moves the alias `current` to
it, so `models:/<run>@current` is the run's newest adapter (also after a restart from an earlier
step). Client calls only, like the tracker; a retried stage finds its version instead of adding
a second one.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .mlflow_tracker import Tracker

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
MODEL_CODE = Path(__file__).with_name("adapter_model_code.py")
CURRENT_ALIAS = "current"
STEP_TAG, DATASET_TAG, BASE_TAG, REVISION_TAG = "adaptinf.step", "adaptinf.dataset", "adaptinf.base", "adaptinf.revision"


def _requirements() -> list[str]:
    """Pinned to what wrote the model: MLflow would otherwise infer them by loading the model in a
    subprocess, seconds per step."""
    out = []
    for package in ("adaptinf", "torch", "transformers", "peft"):
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(package)
    return out


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a bar for each artifact copy; it would land in the step table."""
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


def log_adapter_model(tracker: Tracker, run_id: str | None, adapter_dir: str | Path,
                      settings: dict[str, Any]) -> bool:
    """Log `adapter_dir` (a PEFT adapter whose config names its base) as the run's pyfunc model;
    False when there is no run or no single adapter (the expansion regime keeps one per dataset)."""
    import mlflow.pyfunc

    from .adapter_model import ADAPTER_ARTIFACT
    if run_id is None:
        return False
    if not (Path(adapter_dir) / "adapter_config.json").exists():
        log.info("no single adapter in %s: no MLflow model logged", adapter_dir)
        return False
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        path = Path(tmp) / MODEL_ARTIFACT
        # MLflow files an artifact under its folder's name: `artifacts/adapter` in the model.
        adapter = shutil.copytree(adapter_dir, Path(tmp) / ADAPTER_ARTIFACT)
        mlflow.pyfunc.save_model(path, python_model=str(MODEL_CODE), artifacts={ADAPTER_ARTIFACT: str(adapter)},
                                 model_config=settings, pip_requirements=_requirements())
        tracker.client.log_artifacts(run_id, str(path), MODEL_ARTIFACT)
    return True


def register_step_model(tracker: Tracker, run_id: str, tags: dict[str, str]) -> str:
    """The registry version holding `run_id`'s model (created once), aliased `current`."""
    from mlflow.exceptions import MlflowException
    client, name = tracker.client, tracker.run
    try:
        client.create_registered_model(name, tags={"adaptinf.experiment": tracker.experiment_name},
                                       description=f"Adapters of the LifelongRun {name}, one version per step")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    version = found[0] if found else client.create_model_version(
        name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, CURRENT_ALIAS, version.version)
    return str(version.version)


def version_tags(step: int, dataset: str, base: str, revision: str | None) -> dict[str, str]:
    tags = {STEP_TAG: str(step), DATASET_TAG: dataset, BASE_TAG: base}
    if revision:
        tags[REVISION_TAG] = revision
    return tags
