"""A run's per-step results, read back from the store's stage markers.

Every stage marker carries a small summary; this module joins them into the per-step rows of
`summary.json` (docs/method.md §12) and the skill-score history that forgetting is computed from.
Steps whose dataset had no usable record have no eval and are listed apart.
"""
from __future__ import annotations

from typing import Any

from adaptinf import layout
from adaptinf.metrics import average_accuracy, forgetting_rate, forgetting_rate_taught
from adaptinf.selection import get_strategy
from adaptinf.store import Store


def _summary(store: Store, run: str, step: int, stage: str) -> dict[str, Any] | None:
    prefix = layout.stage_prefix(run, step, stage)
    return store.read_marker(prefix).get("summary", {}) if store.is_committed(prefix) else None


def step_numbers(store: Store, run: str) -> list[int]:
    """Steps that have started (their inputs snapshot exists), ascending."""
    steps = {int(k.split("/")[2]) for k in store.list(f"{run}/steps/") if k.endswith("/inputs.json")}
    return sorted(steps)


def skill_history(store: Store, run: str, upto: int) -> list[tuple[int, dict[str, float]]]:
    """(step, skill scores) of every evaluated step <= upto, in order."""
    out = []
    for step in step_numbers(store, run):
        if step > upto:
            break
        ev = _summary(store, run, step, "eval")
        if ev is not None and ev.get("skills"):
            out.append((step, ev["skills"]))
    return out


def stage_seconds(store: Store, run: str, step: int) -> dict[str, float]:
    """Seconds per stage of a step, from the markers (extract: the slowest shard; `repair-check`,
    the repair pass's loss checks, taken out of train's)."""
    out: dict[str, float] = {}
    for stage in layout.STAGES:
        prefix = layout.stage_prefix(run, step, stage)
        if stage == "extract":
            shards = [k for k in store.list(prefix + "/") if k.endswith("/_COMMITTED.json")]
            if shards:
                out[stage] = round(max(store.read_json(k).get("seconds", 0.0) for k in shards), 3)
        elif store.is_committed(prefix):
            marker = store.read_marker(prefix)
            out[stage] = round(marker.get("seconds", 0.0), 3)
            # The repair pass's two loss checks are selection work done inside the train stage.
            check = ((marker.get("summary") or {}).get("repair") or {}).get("check_seconds")
            if stage == "train" and check:
                out["repair-check"] = round(check, 3)
                out[stage] = round(out[stage] - check, 3)
    return out


def latest_adapter_uri(store: Store, run: str, steps: list[int]) -> str | None:
    """Where the adapter of the latest finished step that trained one lives (its config names the
    base it applies to): the result to take away."""
    for step in reversed(steps):
        folder = f"{layout.stage_prefix(run, step, 'train')}/adapter"
        if store.exists(f"{folder}/adapter_config.json"):
            return store.uri(folder)
    return None


def build_summary(store: Store, run: str, strategy: str) -> dict[str, Any]:
    """The `summary.json` document: one row per finished step, plus the final figures."""
    rows, failed = [], []
    for step in step_numbers(store, run):
        inputs = store.read_json(layout.inputs_key(run, step))
        ingest = _summary(store, run, step, "ingest")
        if ingest is not None and ingest.get("accepted", 1) == 0:
            failed.append({"step": step, "dataset": inputs["dataset"], "reason": "no usable record"})
            continue
        prune = _summary(store, run, step, "prune")
        if prune is None:
            continue  # not finished (yet)
        select = _summary(store, run, step, "cluster-select") or {}
        ev = _summary(store, run, step, "eval") or {}
        rows.append({"step": step, "dataset": inputs["dataset"], "pool_size": prune.get("pool_size"),
                     "candidate_pool": select.get("pool_size"), "selected": select.get("selected"),
                     "k": select.get("k"), "pruned": prune.get("pruned", 0),
                     "skills": ev.get("skills", {}), "avg_acc": ev.get("avg_acc"),
                     "forgetting_rate": ev.get("forgetting_rate"),
                     "forgetting_rate_taught": ev.get("forgetting_rate_taught"),
                     "seconds": stage_seconds(store, run, step)})
    history = [r["skills"] for r in rows if r["skills"]]
    final = {"avg_acc": average_accuracy(history[-1]) if history else None,
             "forgetting_rate": forgetting_rate(history),
             "forgetting_rate_taught": forgetting_rate_taught(history),
             "adapter": latest_adapter_uri(store, run, [r["step"] for r in rows])}
    out: dict[str, Any] = {"run": run, "strategy": strategy, "steps": rows, "failed_steps": failed, "final": final}
    if get_strategy(strategy).joint:   # multitask: steps before the last were only ingested
        out["joint"] = True
    return out
