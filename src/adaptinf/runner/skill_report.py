"""What the runs did per hidden skill label — for checking a comparison, never used by selection.

The demo records carry a `skill` label that selection never sees (docs/method.md §2). From a finished
run's store this module reads how well each step's clusters match those labels (purity, NMI)
and which skills the selected samples had compared with the pool they came from.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from adaptinf import layout
from adaptinf.analysis import cluster_purity, nmi
from adaptinf.store import LocalStore

UNLABELLED = "?"   # a record without a `skill` label (the user's own data may have none)


def _steps(workdir: Path, run: str):
    """(store, step, uid → skill of everything ingested so far) for each step of a local run."""
    store = LocalStore(workdir)
    skills: dict[str, str] = {}
    step = 0
    while store.exists(layout.inputs_key(run, step)):
        ingest = f"{layout.stage_prefix(run, step, 'ingest')}/records.jsonl"
        if store.exists(ingest):
            for line in store.read_bytes(ingest).decode("utf-8").splitlines():
                rec = json.loads(line)
                skills[f"{rec['dataset']}/{rec['id']}"] = rec.get("skill") or UNLABELLED
        yield store, step, skills
        step += 1


def _pool_uids(store: LocalStore, run: str, step: int) -> list[str]:
    """The step's pool in feature order (extract shards in index order)."""
    prefix = layout.stage_prefix(run, step, "extract")
    shards = sorted({k.rsplit("/", 2)[-2] for k in store.list(prefix) if k.endswith("/uids.json")})
    return [u for shard in shards for u in store.read_json(f"{prefix}/{shard}/uids.json")]


def cluster_quality(workdir: Path, run: str) -> list[dict[str, Any]]:
    """Per step t ≥ 1 with clusters: k, purity and NMI against the skill labels."""
    out = []
    for store, step, skills in _steps(workdir, run):
        labels_key = f"{layout.stage_prefix(run, step, 'cluster-select')}/labels.npy"
        if step > 0 and store.exists(labels_key):
            labels = store.read_npy(labels_key)
            truth = [skills.get(u, UNLABELLED) for u in _pool_uids(store, run, step)]
            out.append({"step": step, "k": int(len(np.unique(labels))),
                        "purity": cluster_purity(labels, truth), "nmi": nmi(labels, truth)})
    return out


def mean_quality(workdirs: dict[str, list[Path]], run: str) -> dict[str, list[dict[str, Any]]]:
    """Per strategy with clusters (its runs' workdirs, one per seed): per step, mean k/purity/NMI."""
    out: dict[str, list[dict[str, Any]]] = {}
    for strategy, dirs in workdirs.items():
        per_seed = [cluster_quality(d, run) for d in dirs]
        if not all(per_seed):
            continue
        steps = min(len(q) for q in per_seed)
        out[strategy] = [{"step": per_seed[0][i]["step"],
                          **{key: float(np.mean([q[i][key] for q in per_seed])) for key in ("k", "purity", "nmi")}}
                         for i in range(steps)]
    return out


def selection_mix(workdirs: dict[str, list[Path]], run: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per strategy: each skill's share of the selected samples and of the pool, steps t ≥ 1,
    counted over all seeds (step 0 selects the whole first dataset for everyone)."""
    out = {}
    for strategy, dirs in workdirs.items():
        chosen, pool = Counter(), Counter()
        for d in dirs:
            for store, step, skills in _steps(d, run):
                selection = f"{layout.stage_prefix(run, step, 'cluster-select')}/selection.json"
                if step == 0 or not store.exists(selection):
                    continue
                chosen.update(skills.get(u, UNLABELLED) for u in store.read_json(selection)["selected"])
                pool.update(skills.get(u, UNLABELLED) for u in store.read_json(layout.pool_key(run, step - 1))["members"]
                            + _new_members(store, run, step))
        if chosen:
            out[strategy] = {"selected": _shares(chosen), "pool": _shares(pool)}
    return out


def _new_members(store: LocalStore, run: str, step: int) -> list[str]:
    ingest = f"{layout.stage_prefix(run, step, 'ingest')}/records.jsonl"
    if not store.exists(ingest):
        return []
    return [f"{r['dataset']}/{r['id']}" for r in map(json.loads, store.read_bytes(ingest).decode("utf-8").splitlines())]


def _shares(counts: Counter) -> dict[str, float]:
    total = sum(counts.values())
    return {k: counts[k] / total for k in sorted(counts)}


def has_skill_labels(mix: dict[str, dict[str, dict[str, float]]]) -> bool:
    """Whether any pool sample had a skill label (without, purity/NMI and the mix say nothing)."""
    return any(k != UNLABELLED for m in mix.values() for k in m["pool"])
