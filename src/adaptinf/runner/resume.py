"""Resuming a workdir: does what it holds match what the user asked for?

Each started step keeps the specs it began with (`inputs.json`), so that a step never mixes
specs. Re-running with a different strategy, seed or edited YAML used to resume silently with
the old specs while printing the new ones; now the difference is named and the user chooses:
refuse (default), continue with what the workdir holds, or restart from a step.
"""
from __future__ import annotations

import logging
from typing import Any

from adaptinf import layout
from adaptinf.spec import LifelongRunSpec, SpecError
from adaptinf.store import Store

log = logging.getLogger(__name__)

# Where and how a run executes, not what it computes: never a reason to refuse a resume.
IGNORED = ("storage", "resources", "suspend")
MAX_LISTED = 12


class ResumeRefused(SpecError):
    """The workdir holds a run whose recorded specs differ from the requested ones."""


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    # Lists of dicts (eval.suite) by index: a moved eval folder names each path that changed,
    # not the whole suite twice.
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out: dict[str, Any] = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: obj}


def differences(recorded: dict[str, Any], requested: dict[str, Any], ignored: tuple[str, ...] = ()) -> list[str]:
    """'field: recorded → requested' for every dotted field that differs."""
    old, new = _flatten(recorded), _flatten(requested)
    out = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in ignored or old.get(key) == new.get(key):
            continue
        out.append(f"{key}: {old.get(key)!r} in the workdir, {new.get(key)!r} requested")
    return out


def _with_current_defaults(run_spec: dict[str, Any]) -> dict[str, Any]:
    """A recorded run spec as this version reads it: a field added since the workdir was written
    (e.g. strategyOptions) counts as its default, not as a difference. Left as recorded if it
    no longer validates (the difference is then reported field by field)."""
    try:
        return LifelongRunSpec.model_validate(run_spec).to_dict()
    except ValueError:
        return run_spec


def step_differences(store: Store, run: str, run_spec: dict[str, Any],
                     datasets: list[tuple[str, dict[str, Any]]]) -> dict[int, list[str]]:
    """For every started step, what differs between its `inputs.json` and the request."""
    out: dict[int, list[str]] = {}
    for step, (name, ds_spec) in enumerate(datasets):
        key = layout.inputs_key(run, step)
        if not store.exists(key):
            continue
        snap = store.read_json(key)
        diff = []
        if snap["dataset"] != name:
            diff.append(f"dataset: {snap['dataset']!r} in the workdir, {name!r} requested")
        diff += [f"run.{d}" for d in differences(_with_current_defaults(snap["run_spec"]), run_spec, IGNORED)]
        diff += [f"dataset.{d}" for d in differences(snap["dataset_spec"], ds_spec)]
        if diff:
            out[step] = diff
    return out


def _steps_label(steps: list[int]) -> str:
    """'step 3', 'steps 0-4', 'steps 0, 2, 5'."""
    if len(steps) == 1:
        return f"step {steps[0]}"
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"steps {steps[0]}-{steps[-1]}"
    return "steps " + ", ".join(map(str, steps))


def refusal(workdir: str, run: str, diffs: dict[int, list[str]]) -> str:
    first = min(diffs)
    lines = [f"workdir {workdir} already holds run {run!r} with different specs than requested:"]
    # The same difference at every step (an edited run spec) is one line, not one per step.
    steps_of: dict[str, list[int]] = {}
    for step, diff in sorted(diffs.items()):
        for d in diff:
            steps_of.setdefault(d, []).append(step)
    listed = list(steps_of.items())
    lines += [f"  {_steps_label(steps)}: {d}" for d, steps in listed[:MAX_LISTED]]
    if len(listed) > MAX_LISTED:
        lines.append(f"  … and {len(listed) - MAX_LISTED} more")
    ways = [("--continue-anyway", "keep the workdir's specs for the steps already started "
                                  "(new steps use the requested ones)"),
            (f"--restart-from {first}", f"delete step {first} onwards and run them with the requested specs"),
            ("--workdir OTHER", "start a separate run")]
    width = max(len(flag) for flag, _ in ways) + 3
    lines.append("Resuming would silently use the workdir's specs. Choose one:")
    lines += [f"  {flag.ljust(width)}{what}" for flag, what in ways]
    return "\n".join(lines)


def restart_from(store: Store, run: str, step: int) -> list[int]:
    """Delete every step >= `step` (its stage outputs, snapshot and pool manifest) so that it
    runs again from scratch; returns the deleted steps. Earlier steps are untouched."""
    steps = sorted({int(k.split("/")[2]) for k in store.list(f"{run}/steps/")})
    gone = [s for s in steps if s >= step]
    for s in gone:
        # The snapshot last: until it is gone the step still reads as started, never half-deleted.
        for key in sorted(store.list(layout.step_dir(run, s) + "/"), key=lambda k: k.endswith("inputs.json")):
            store.delete(key)
        if store.exists(layout.pool_key(run, s)):
            store.delete(layout.pool_key(run, s))
    for key in store.list(f"{run}/pool/"):
        if any(key.startswith(layout.pool_key(run, s)[:-len(".json")]) for s in gone):
            store.delete(key)
    if gone:
        log.warning("run %s: deleted steps %s to run them again", run, gone)
    return gone
