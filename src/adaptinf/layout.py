"""Where each artifact lives in the store: one place, shared by stages, runner and operator.

    <run>/steps/<NNNN>/inputs.json                  run + dataset spec snapshot for the step
    <run>/steps/<NNNN>/<stage>/...  + _COMMITTED.json   a stage's outputs, sealed by its marker
    <run>/steps/<NNNN>/extract/shard-<i>-of-<n>/...     one extract shard
    <run>/pool/step-<NNNN>.json                     pool manifest after the step (kept forever)
    <run>/summary.json                              per-step metrics so far (docs/method.md §12)
    <run>/owner.json                                uid of the LifelongRun object that owns the prefix

The marker of a finished stage carries a small `summary` dict (counts, metrics) that the
operator copies into the resource status, so the operator never reads large artifacts.
This module imports nothing heavy: the operator image has no torch.
"""
from __future__ import annotations

STAGES = ("extract", "cluster-select", "train", "eval", "prune")


def step_dir(run: str, step: int) -> str:
    return f"{run}/steps/{step:04d}"


def inputs_key(run: str, step: int) -> str:
    return f"{step_dir(run, step)}/inputs.json"


def stage_prefix(run: str, step: int, stage: str) -> str:
    if stage not in STAGES and stage != "ingest":
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return f"{step_dir(run, step)}/{stage}"


def shard_prefix(run: str, step: int, index: int, count: int) -> str:
    return f"{stage_prefix(run, step, 'extract')}/shard-{index:05d}-of-{count:05d}"


def pool_key(run: str, step: int) -> str:
    return f"{run}/pool/step-{step:04d}.json"


def summary_key(run: str) -> str:
    return f"{run}/summary.json"


def tracking_key(run: str) -> str:
    """MLflow ids of the run's parent run, so every pod attaches to the same one."""
    return f"{run}/mlflow.json"


def owner_key(run: str) -> str:
    """Which LifelongRun object (uid) the `<run>/` prefix belongs to: a re-created run of the same
    name must not take the old one's markers for its own steps."""
    return f"{run}/owner.json"
