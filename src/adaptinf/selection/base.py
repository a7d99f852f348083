"""The selection strategy interface and its registry.

A strategy turns the pool's features into the indices trained on at this step. Like PEFT's
one-folder-per-method layout, each strategy is one module that subclasses `Strategy`, sets a
literal `name` and is decorated with `@register`; `adaptinf.manifest` reads those names from the
source and `selection/__init__.py` imports the modules, which fills the registry. The stage code
only ever calls `get_strategy(name).select(feats, ctx)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from adaptinf import strategy_options
from adaptinf.spec import DEFAULT_SCORERS, STRATEGIES

FEATURE_KINDS = frozenset({"grads", "hidden", "scores"})


@dataclass
class PoolFeatures:
    """Everything a strategy may look at, in pool order."""
    uids: list[str]                      # "<dataset>/<record id>"
    datasets: list[str]                  # dataset name per sample
    is_new: np.ndarray                   # bool (n,): sample from the current step's dataset
    grads: np.ndarray | None = None      # (n, p) float32, rows L2-normalised (projected LoRA grads)
    hidden: np.ndarray | None = None     # (n, h) float32 mean-pooled hidden states
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # scorer -> (n,); NaN = not applicable

    def __post_init__(self) -> None:
        n = len(self.uids)
        self.is_new = np.asarray(self.is_new, dtype=bool)
        if self.is_new.shape != (n,) or len(self.datasets) != n:
            raise ValueError(f"is_new {self.is_new.shape} and datasets ({len(self.datasets)}) must have one "
                             f"entry per pool sample ({n})")

    def __len__(self) -> int:
        return len(self.uids)

    def require(self, kind: str, strategy: str) -> np.ndarray:
        """The grads or hidden matrix, or a clear error naming what extract must compute."""
        value = getattr(self, kind)
        if value is None:
            raise ValueError(f"strategy {strategy!r} needs {kind!r} features, which were not extracted")
        if len(value) != len(self):
            raise ValueError(f"{kind} has {len(value)} rows for a pool of {len(self)}")
        return value

    def require_scores(self, names: tuple[str, ...] | list[str], strategy: str) -> dict[str, np.ndarray]:
        """The extracted scores among `names`, or a clear error if none of them was extracted."""
        found = {s: np.asarray(self.scores[s]) for s in names if s in self.scores}
        if not found:
            raise ValueError(f"strategy {strategy!r} needs 'scores' features (any of {list(names)}), "
                             f"which were not extracted (have: {sorted(self.scores)})")
        for s, v in found.items():
            if v.shape != (len(self),):
                raise ValueError(f"score {s!r} has shape {v.shape} for a pool of {len(self)}")
        return found


@dataclass
class SelectionContext:
    """The knobs of one selection call (from the LifelongRun spec)."""
    budget: int                          # T
    seed: int
    k_min: int = 5
    k_max: int = 50
    niter: int = 25
    scorers: tuple[str, ...] = DEFAULT_SCORERS
    nredo: int = 1                       # k-means restarts per k (best WSS kept)
    # The rest default to the paper's behaviour; the LifelongRun spec's defaults differ
    # (spec.ClusteringSpec / SelectionSpec, docs/options.md).
    k_rule: str = "elbow"                # "elbow" | "gain" (clustering.pick_k)
    min_gain: float = 0.05
    k_sweep: str = "full"                # "full" (every k, every row) | "fast" (clustering.choose_k)
    stability_seeds: int = 0             # re-runs of the k choice reported as k's stability
    cluster_features: str = "gradients"  # "gradients" | "hidden" (Table-3 ablation)
    ccs_bin_rule: str = "fixed"          # "fixed": ccs_bins always; "quota": min(ccs_bins, quota)
    ccs_bins: int = 50
    budget_split: str = "uniform"        # "uniform" | "density" (by cluster size)
    diffuse: str = "none"                # "none" | "size": diffuse clusters get >= their size share
    diffuse_ratio: float = 0.5
    mastered: str = "none"               # "none" | "group": near-zero-loss samples clustered apart
    mastered_loss: float = 0.05
    mastered_budget: str = "cluster"     # "cluster": one cluster's share | "size": >= its size share
    mastered_rehearsal: str = "pooled"   # "pooled": one draw | "stratified": over hidden-state sub-clusters
    options: dict[str, Any] = field(default_factory=dict)  # strategy-specific knobs (spec.strategyOptions)


@dataclass
class SelectionResult:
    """What was selected and why."""
    indices: np.ndarray                  # selected pool indices, sorted, unique
    report: dict                         # JSON-serialisable explanation (strategy, k, per-cluster ...)
    labels: np.ndarray | None = None     # cluster label per pool sample, if the strategy clustered


class Strategy:
    """Base class: subclasses set `name` and `needs` and implement `select`.

    `budgeted` strategies return exactly min(T, n) samples; the training regimes
    (sequential, multi-task, replay) are not budgeted. `prunes_pool` asks the prune stage to
    cut the pool to D after the step (Lite).
    """
    name: str = ""
    needs: frozenset[str] = frozenset()
    budgeted: bool = True
    prunes_pool: bool = False
    # The knobs ctx.options may set, with their defaults. A built-in strategy's come from
    # `adaptinf.strategy_options` (filled in by `register`); another strategy declares its own.
    defaults: ClassVar[dict[str, Any]] = {}
    # How the train and eval stages use the selection: the name of a registered training regime
    # (`adaptinf.training.regimes`): "continue" the previous step's adapter, "ewc" (continue
    # under an EWC penalty) or "expansion" (a new adapter per dataset, routed per sample at eval).
    training_regime: ClassVar[str] = "continue"
    # One training on the union of all datasets at the last step ("in one go", the paper's
    # multi-task upper bound): runners that know the last step (run-local, compare) only ingest
    # the earlier ones (`stages.ingest.join_pool`). The operator, whose stream has no last step,
    # runs every step in full.
    joint: ClassVar[bool] = False

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        raise NotImplementedError

    def require_all(self, feats: PoolFeatures) -> None:
        """A clear error for any declared feature kind that was not extracted."""
        for kind in sorted(self.needs):
            if kind == "scores":
                if not feats.scores:
                    raise ValueError(f"strategy {self.name!r} needs 'scores' features, which were not extracted")
            else:
                feats.require(kind, self.name)

    def options(self, ctx: SelectionContext) -> dict[str, Any]:
        """`defaults` updated with ctx.options; an unknown key is an error, not silently ignored.
        A built-in strategy's are checked (type, bounds) as the spec checks strategyOptions."""
        if self.name in STRATEGIES:
            return strategy_options.resolve(self.name, ctx.options, where="options")
        unknown = set(ctx.options) - set(self.defaults)
        if unknown:
            raise ValueError(f"strategy {self.name!r} has no option(s) {sorted(unknown)}; "
                             f"known: {sorted(self.defaults)}")
        return {**self.defaults, **ctx.options}

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy to the registry under `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if not cls.needs <= FEATURE_KINDS:
        raise TypeError(f"{cls.name}: needs {set(cls.needs - FEATURE_KINDS)} not in {sorted(FEATURE_KINDS)}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    if cls.name in STRATEGIES:
        # One source for the options of the strategies a spec can name (the operator checks
        # strategyOptions without importing this registry).
        if "defaults" in vars(cls):
            raise TypeError(f"{cls.name}: declare its options in adaptinf.strategy_options, not on the class")
        cls.defaults = strategy_options.defaults(cls.name)
    _REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    """A fresh instance of the named strategy."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; known: {', '.join(available())}") from None


def available() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def sorted_unique(indices: np.ndarray) -> np.ndarray:
    """Pool indices as the sorted, unique int64 array every SelectionResult carries."""
    return np.unique(np.asarray(indices, dtype=np.int64))


def impute_median(values: np.ndarray) -> np.ndarray:
    """NaN (not applicable) entries replaced by the median of the rest.

    The median puts such samples in the middle stratum of CCS: neither favoured nor dropped.
    """
    v = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(v)
    if bad.all():
        raise ValueError("no finite value to impute from")
    if bad.any():
        v[bad] = np.median(v[~bad])
    return v
