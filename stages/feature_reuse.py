"""Extract features that cannot have changed since an earlier step, found and reused.

A fixed proxy model (`extract.proxyModel`) gives a sample the same gradients, hidden states
and scores at every step, so only the new dataset's samples need its forward and backward. A
shard records `feature_key` (a digest of everything that shapes the features: the proxy's
path and file contents, dtype, LoRA settings and adapter seed, layers, projection dimension
and seed, gradient source, scorers, maximum length, the code version) in its marker summary and
`origin.npy` (the step at which each row was computed). A later shard with the same key takes
the rows of its samples from the newest earlier shard that holds them: the previous step's for
the old pool, an older one for a sample restored after pruning (`adaptinf pool restore`).
Lookups go by the samples of the current pool only, so a pruned sample is never carried back
in. The trained model changes every step: with it nothing is reused under `extract.refresh:
every-step` (the paper's behaviour, the default); the other refresh policies reuse its features
knowingly stale, under a key that names the trained base instead of a proxy (`refresh.py`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptinf import __version__, layout
from adaptinf.model.loading import materialise
from adaptinf.model.prepare import sha256_file

from .context import StageContext

log = logging.getLogger(__name__)

ORIGIN = "origin.npy"  # per row: the step whose model computed it
FEATURE_FILES = ("grads.npy", "hidden.npy")  # and scores/<scorer>.npy


def _tree_digest(root: Path) -> str:
    """Names and contents of every file under `root`. Read in full each time (~2 s per GB): a
    cache keyed by sizes and mtimes would miss a file rewritten within the clock's resolution."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def model_identity(name: str) -> dict[str, str]:
    """What identifies a model's weights: its name and, for a local folder or file, a digest of
    its contents (a PEFT adapter folder: the base it names too). A hub id is identified by its
    name only: `model.revision` pins the run's base, not the proxy, so a hub proxy that changes
    upstream is not noticed; use a local folder as the proxy to make reuse exact."""
    path = Path(materialise(name))
    out = {"name": name}
    if path.is_file():
        out["sha256"] = sha256_file(path)
    elif path.is_dir():
        out["sha256"] = _tree_digest(path)
        adapter = path / "adapter_config.json"
        if adapter.exists():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if base:
                out["base"] = json.dumps(model_identity(str(base)), sort_keys=True)
    return out


def trained_identity(ctx: StageContext) -> dict[str, str]:
    """The trained model as a feature key sees it: its base (the adapter changes every step and
    is left out; features from before the run's initial tuning are excluded by `refresh.py`)."""
    m = ctx.spec.model
    return {"base": m.base, "revision": str(m.revision), "initial_tuning": m.initial_tuning}


def feature_key(ctx: StageContext, grads: bool, hidden: bool, scorers: tuple[str, ...]) -> str | None:
    """The digest under which this step's features may be reused, or None when they may not
    (`extract.reuseFeatures: false`; or the trained model under `extract.refresh: every-step`:
    it changes every step). Under another refresh policy the trained model's features are
    reused stale on purpose: the key leaves the adapter out and names the base."""
    x = ctx.spec.extract
    if not x.reuse_features:
        return None
    if x.proxy_model:
        model: dict[str, object] = {"proxy": model_identity(x.proxy_model)}
    elif x.refresh != "every-step":
        model = {"trained": trained_identity(ctx)}
    else:
        return None
    identity = {
        **model, "dtype": ctx.spec.model.dtype,
        "lora": ctx.spec.model.lora.model_dump(mode="json"), "adapter_seed": ctx.spec.seed,
        "layers": list(x.layers), "projection_dim": x.projection_dim, "projection_seed": x.seed,
        "gradient_source": x.gradient_source, "max_length": x.max_length,
        "grads": grads, "hidden": hidden, "scorers": sorted(scorers), "code": __version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Reused:
    """Rows found in earlier shards for some of a shard's samples."""
    rows: dict[str, tuple[str, int]] = field(default_factory=dict)   # uid -> (source shard, row)
    origin: dict[str, int] = field(default_factory=dict)             # uid -> step that computed it
    summary: dict = field(default_factory=dict)                      # a source shard's marker summary
    files: list[str] = field(default_factory=list)                   # its feature files (grads.npy, ...)


def find_reusable(ctx: StageContext, key: str, uids: list[str]) -> Reused:
    """For each of `uids`, the newest earlier shard with the same feature key that holds it."""
    missing = set(uids)
    found = Reused()
    for step in range(ctx.step - 1, -1, -1):
        if not missing:
            break
        prefix = layout.stage_prefix(ctx.run, step, "extract")
        for marker in sorted(k for k in ctx.store.list(prefix) if k.endswith("/_COMMITTED.json")):
            meta = ctx.store.read_json(marker)
            summary = meta.get("summary", {})
            if summary.get("feature_key") != key:
                continue
            shard = marker[: -len("/_COMMITTED.json")]
            shard_uids = ctx.store.read_json(f"{shard}/uids.json")
            origin_key = f"{shard}/{ORIGIN}"
            origin = ctx.store.read_npy(origin_key) if ctx.store.exists(origin_key) \
                else np.full(len(shard_uids), step)
            for row, uid in enumerate(shard_uids):
                if uid in missing:
                    missing.discard(uid)
                    found.rows[uid] = (shard, row)
                    found.origin[uid] = int(origin[row])
                    if not found.summary:
                        found.summary = summary
                        found.files = sorted(f for f in meta.get("files", []) if f in FEATURE_FILES
                                             or (f.startswith("scores/") and f.endswith(".npy")))
    return found


def gather(ctx: StageContext, reused: Reused, uids: list[str], files: list[str]) -> dict[str, np.ndarray]:
    """The reused rows of `uids` (in that order) for each feature file (e.g. grads.npy)."""
    by_shard: dict[str, list[tuple[int, int]]] = {}
    for out_row, uid in enumerate(uids):
        shard, row = reused.rows[uid]
        by_shard.setdefault(shard, []).append((out_row, row))
    out: dict[str, np.ndarray] = {}
    for shard, pairs in by_shard.items():
        dest = np.array([p[0] for p in pairs])
        src = np.array([p[1] for p in pairs])
        for name in files:
            values = ctx.store.read_npy(f"{shard}/{name}")
            if name not in out:
                out[name] = np.empty((len(uids), *values.shape[1:]), dtype=values.dtype)
            out[name][dest] = values[src]
    return out
