"""The pool manifest: which samples are in the pool after a step, where each came from, and
which were pruned, when and why. One manifest is kept per step, so the pool after any step can
be rebuilt and pruned samples listed or restored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import layout
from ..store import Store
from .records import Record, load_jsonl


@dataclass
class PrunedSample:
    uid: str
    step: int
    reason: str
    cluster: int | None = None
    max_sim: float | None = None
    nearest: str | None = None


@dataclass
class DatasetSource:
    name: str
    step: int
    records_key: str   # validated records (JSONL) in the store
    count: int


@dataclass
class PoolManifest:
    run: str
    step: int
    members: list[str] = field(default_factory=list)            # uids, pool order
    sources: list[DatasetSource] = field(default_factory=list)   # every dataset ever added
    pruned: list[PrunedSample] = field(default_factory=list)     # cumulative, in pruning order
    restored: list[dict[str, Any]] = field(default_factory=list)  # pruned samples put back (`adaptinf pool restore`)

    def to_json(self) -> dict[str, Any]:
        out = {"run": self.run, "step": self.step, "size": len(self.members), "members": self.members,
               "sources": [asdict(s) for s in self.sources], "pruned": [asdict(p) for p in self.pruned]}
        if self.restored:
            out["restored"] = self.restored
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PoolManifest:
        return cls(run=obj["run"], step=obj["step"], members=list(obj["members"]),
                   sources=[DatasetSource(**s) for s in obj["sources"]],
                   pruned=[PrunedSample(**p) for p in obj["pruned"]], restored=list(obj.get("restored") or []))

    def extended(self, step: int, source: DatasetSource, new_uids: list[str]) -> PoolManifest:
        """The candidate pool of `step`: this pool plus a new dataset's samples, appended."""
        if any(s.name == source.name for s in self.sources):
            raise ValueError(f"dataset {source.name!r} is already in the pool of run {self.run!r}")
        return PoolManifest(run=self.run, step=step, members=self.members + new_uids,
                            sources=self.sources + [source], pruned=list(self.pruned), restored=list(self.restored))


def empty_pool(run: str) -> PoolManifest:
    return PoolManifest(run=run, step=-1)


def load_pool(store: Store, run: str, step: int) -> PoolManifest:
    """The pool after `step` (step -1 = the empty pool before the first dataset)."""
    if step < 0:
        return empty_pool(run)
    return PoolManifest.from_json(store.read_json(layout.pool_key(run, step)))


def save_pool(store: Store, manifest: PoolManifest) -> None:
    store.write_json(layout.pool_key(manifest.run, manifest.step), manifest.to_json())


def load_records(store: Store, manifest: PoolManifest, uids: list[str] | None = None) -> list[Record]:
    """The Record of each uid (default: the members), in the order given."""
    wanted = manifest.members if uids is None else uids
    by_uid: dict[str, Record] = {}
    for source in manifest.sources:
        for rec in load_jsonl(store.read_bytes(source.records_key)):
            by_uid[rec.uid] = rec
    missing = [u for u in wanted if u not in by_uid]
    if missing:
        raise KeyError(f"pool of run {manifest.run!r} step {manifest.step} names unknown samples, e.g. {missing[:3]}")
    return [by_uid[u] for u in wanted]


def restore(manifest: PoolManifest, uids: list[str]) -> PoolManifest:
    """A manifest with previously pruned samples put back (appended in the given order)."""
    pruned = {p.uid for p in manifest.pruned}
    unknown = [u for u in uids if u not in pruned]
    if unknown:
        raise KeyError(f"not pruned from run {manifest.run!r}: {unknown[:5]}")
    keep = [p for p in manifest.pruned if p.uid not in set(uids)]
    return PoolManifest(run=manifest.run, step=manifest.step, members=manifest.members + list(uids),
                        sources=list(manifest.sources), pruned=keep, restored=list(manifest.restored))
