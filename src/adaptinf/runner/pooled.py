"""One comparison table from several `adaptinf compare` tables of the same stream over disjoint
seeds (e.g. seeds 0-2 on one machine, `--seeds 3-4` on another, or a day later).

Every figure of a row is a function of its per-seed figures (`per_seed` in table.json) or a
mean over seeds, so pooling is exact: the figures' means, standard deviations and paired
bootstrap intervals (to random, and of a variant to its plain strategy) are recomputed from
the union of the per-seed figures, and the seeds-means (stage seconds, final scores per skill,
samples trained) are weighted by each table's seed count. The result equals the table one
invocation over all the seeds would have written (tests/test_compare.py). What cannot be
checked from the tables is that they share the stream, spec and code: that is the caller's to
make sure of (the same command with other `--seeds`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from adaptinf.runner import report

# What pooling reads of each row of a table.json.
NEEDED = {"strategy", "seeds", "per_seed", "seconds", "final_skills", "trained_samples"}


def read_table(path: Path) -> list[dict[str, Any]]:
    """A compare `table.json`'s rows; ValueError when the file is not one."""
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and NEEDED <= set(r) for r in rows):
        raise ValueError(f"not the table.json of `adaptinf compare` (rows with {', '.join(sorted(NEEDED))})")
    return rows


def pool_tables(tables: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of `table.json` files (one list per table) → the rows over all their seeds."""
    if len(tables) < 2:
        raise ValueError("pooling needs two tables or more")
    names = [{r["strategy"] for r in t} for t in tables]
    if any(n != names[0] for n in names):
        odd = sorted(set.union(*names) - set.intersection(*names))
        raise ValueError(f"the tables compare different strategies: {', '.join(odd)} not in every table")
    rows, figures = [], {}
    for name in sorted(names[0]):
        parts = [next(r for r in t if r["strategy"] == name) for t in tables]
        seeds = [s for p in parts for s in p["seeds"]]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"{name!r}: seed(s) {sorted({s for s in seeds if seeds.count(s) > 1})} are in more "
                             "than one table; pool tables of disjoint seeds")
        per_seed = figures[name] = {seed: fig for p in parts for seed, fig in p["per_seed"].items()}
        rows.append(_row(name, parts, per_seed))
    report.add_pairs(rows, figures)
    return sorted(rows, key=lambda r: -(r["relative_gain"] if r["relative_gain"] is not None else -math.inf))


def _row(name: str, parts: list[dict[str, Any]], per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"strategy": name, "seeds": sorted(int(s) for s in per_seed)}
    for key in report.FIGURES:
        row[key], row[f"{key}_std"] = report.mean_std([f[key] for f in per_seed.values()])
    weights = [len(p["seeds"]) for p in parts]
    # A stage a run did not have counts 0 s in build_table's means; a skill a seed did not
    # evaluate is left out of its mean.
    stages = sorted({k for p in parts for k in p["seconds"]})
    row["seconds"] = {k: _weighted([p["seconds"].get(k, 0.0) for p in parts], weights) for k in stages}
    skills = sorted({k for p in parts for k in p["final_skills"]})
    row["final_skills"] = {k: _weighted([p["final_skills"].get(k) for p in parts], weights) for k in skills}
    row["trained_samples"] = _weighted([p["trained_samples"] for p in parts], weights)
    row["selection_train_ratio"] = report.selection_ratio(row["seconds"])
    row["per_seed"] = dict(sorted(per_seed.items(), key=lambda kv: int(kv[0])))
    return row


def _weighted(values: list[float | None], weights: list[int]) -> float | None:
    """The mean over all seeds from per-table means (tables without the value left out)."""
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None
