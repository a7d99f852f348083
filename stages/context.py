"""What every stage gets: the run, the step, its dataset, the store and the tracker.

The first stage of a step writes `inputs.json` (the run and dataset specs it started with);
later stages of that step read it back, so editing a LifelongRun mid-step never mixes specs
within one step.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from adaptinf import layout
from adaptinf.model.hub import configure_hub
from adaptinf.spec import InstructionDatasetSpec, LifelongRunSpec
from adaptinf.store import Store
from adaptinf.tracking import Tracker, tracking_uri

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to fix."""


@dataclass
class StageContext:
    run: str
    spec: LifelongRunSpec
    step: int
    dataset: str
    dataset_spec: InstructionDatasetSpec
    store: Store
    tracker: Tracker
    shard_index: int = 0
    shard_count: int = 1
    progress: bool = True

    def prefix(self, stage: str) -> str:
        return layout.stage_prefix(self.run, self.step, stage)

    def inputs(self) -> dict[str, Any]:
        return {"run": self.run, "step": self.step, "dataset": self.dataset,
                "run_spec": self.spec.to_dict(), "dataset_spec": self.dataset_spec.to_dict()}


def build_context(run: str, step: int, store: Store, run_spec: dict | None = None, dataset: str | None = None,
                  dataset_spec: dict | None = None, shard_index: int = 0, shard_count: int = 1,
                  progress: bool = True, tracking: str | None = None) -> StageContext:
    """From the step's snapshot if it exists, else from the given specs (and write the snapshot)."""
    key = layout.inputs_key(run, step)
    if store.exists(key):
        snap = store.read_json(key)
        if dataset is not None and snap["dataset"] != dataset:
            raise StageError(f"step {step} of run {run!r} already belongs to dataset {snap['dataset']!r}, "
                             f"not {dataset!r}")
        run_spec, dataset, dataset_spec = snap["run_spec"], snap["dataset"], snap["dataset_spec"]
    elif run_spec is None or dataset is None or dataset_spec is None:
        raise StageError(f"step {step} of run {run!r} has no inputs.json yet: give the run and dataset specs")
    spec = LifelongRunSpec.model_validate(run_spec)
    ds = InstructionDatasetSpec.model_validate(dataset_spec)
    if not store.exists(key):
        store.write_json(key, {"run": run, "step": step, "dataset": dataset,
                               "run_spec": spec.to_dict(), "dataset_spec": ds.to_dict()})
    configure_hub(spec.model.base, spec.model.revision, spec.model.cache_dir)
    tracker = Tracker(tracking if tracking is not None else tracking_uri(spec.mlflow.tracking_uri),
                      spec.mlflow.experiment, run, store)
    return StageContext(run, spec, step, dataset, ds, store, tracker, shard_index, shard_count, progress)
