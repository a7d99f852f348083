"""Strategy variants for `adaptinf compare`: `STRATEGY@VARIANT` runs a strategy with a few spec
fields overridden, so that options of the extract stage can sit in the same table.

- `@zero-order`: `extract.gradientSource: zero-order` (forward-only gradient estimates).
- `@proxy`: `extract.proxyModel` = the stream's smaller proxy model (`proxy.py` builds it).
- `@backprop`: the defaults, spelled out (the same run as the plain strategy name).
- `@hidden-clusters`, `@density-split`: the paper's Table-3 ablations (`clustering.features:
  hidden`, `selection.budgetSplit: density`).
- `@mastered-size`: `selection.masteredBudget: size` (the mastered group's earlier size floor).
- `@stratified-rehearsal`: `selection.masteredRehearsal: stratified` (the mastered group's
  quota spread over its hidden-state clusters).
- `@paper`: every rule of docs/options.md §7 set back to the paper's behaviour.
- `@repair`: `training.repair.fraction: 0.1` (the interference repair pass on 10% of T).
- `@repair-interleaved`: the same with `training.repair.placement: interleaved` (the risen
  samples join the epochs after the first instead of a pass after training).
- `@ewc`: `training.ewc.lambda` = the `ewc` strategy's default λ: the strategy's selection,
  trained under the EWC penalty (docs/options.md §4).
- `@refresh-every-N` (N ≥ 2): `extract.refresh: every-n-steps`, `refreshEvery: N`; the trained
  model's features of an old sample are recomputed once they are N steps old.
- `@refresh-fraction-P` (P in 1..99): `extract.refresh: fraction`, `refreshFraction: P/100`;
  the new dataset plus P% of the old pool, stratified by the previous step's clusters.
- `@last-layer`: `extract.layers: [last]` (the paper's layer ablation): extract's backward
  stops one decoder layer below the head instead of at the middle one, so a row costs little
  more than a forward.
- `@prune-extract`: `prune.hiddenStates: extract` (Lite prunes on extract's hidden states
  instead of a forward of the pool after training).

Variants combine with `+`, applied left to right: `lite-adapt-inf@refresh-every-2+last-layer`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from adaptinf import strategy_options
from adaptinf.spec import LifelongRunSpec

SEPARATOR = "@"
JOIN = "+"   # between combined variants
VARIANTS = ("backprop", "zero-order", "proxy", "hidden-clusters", "density-split", "mastered-size", "stratified-rehearsal", "paper",
            "repair", "repair-interleaved", "ewc", "last-layer", "prune-extract")
PROXY_DIR = "proxy-model"   # inside the compare stream folder
REPAIR_FRACTION = 0.1       # `@repair`: the share of T the repair pass gets
EWC_LAMBDA: float = strategy_options.STRATEGY_OPTIONS["ewc"]["lambda"].default   # `@ewc`: not tuned per stream


# Variants with a number in their name: the refresh policies of extract (docs/options.md §3).
REFRESH_EVERY = re.compile(r"^refresh-every-([0-9]+)$")
REFRESH_FRACTION = re.compile(r"^refresh-fraction-([0-9]+)$")
PARAMETRISED = ("refresh-every-N (N >= 2)", "refresh-fraction-P (P% of the old pool, 1..99)")


def refresh_policy(variant: str) -> tuple[str, int | float] | None:
    """("every-n-steps", N) or ("fraction", P/100) for a refresh variant, None for another name;
    a ValueError for a refresh variant whose number is out of range."""
    if m := REFRESH_EVERY.match(variant):
        n = int(m.group(1))
        if n < 2:
            raise ValueError(f"variant {variant!r}: N must be >= 2 (every step is the plain strategy)")
        return "every-n-steps", n
    if m := REFRESH_FRACTION.match(variant):
        p = int(m.group(1))
        if not 1 <= p <= 99:
            raise ValueError(f"variant {variant!r}: P is a percentage of the old pool, 1..99")
        return "fraction", p / 100
    return None


def split(name: str) -> tuple[str, str | None]:
    """"lite-adapt-inf@proxy" → ("lite-adapt-inf", "proxy"); a plain name → (name, None); a
    combination keeps its `+`: "x@a+b" → ("x", "a+b")."""
    strategy, sep, variant = name.partition(SEPARATOR)
    if sep:
        parts(variant, name)
    return strategy, (variant if sep else None)


def parts(variant: str, name: str = "") -> list[str]:
    """The variants of a combination, each checked: "a+b" → ["a", "b"]."""
    out = variant.split(JOIN)
    for one in out:
        if one not in VARIANTS and refresh_policy(one) is None:
            raise ValueError(f"unknown variant {one!r} in {name or variant!r}; known: "
                             f"{', '.join(VARIANTS + PARAMETRISED)} (combined with {JOIN!r})")
    if len(set(out)) < len(out):
        raise ValueError(f"variant {variant!r} in {name or variant!r} names one variant twice")
    return out


def needs_proxy(names: tuple[str, ...] | list[str]) -> bool:
    return any((v := split(n)[1]) is not None and "proxy" in parts(v) for n in names)


def apply(run: Any, name: str, stream: str | Path) -> tuple[Any, str]:
    """(the run with the variant's overrides, the strategy to run) for a variant name."""
    strategy, variant = split(name)
    if variant is None:
        return run, strategy
    run = run.model_copy(deep=True)
    for one in parts(variant, name):
        _override(run.spec, one, stream)
    return run, strategy


def _override(spec: Any, variant: str, stream: str | Path) -> None:
    """Set one variant's fields in `spec` (a copy)."""
    extract = spec.extract
    if variant == "zero-order":
        extract.gradient_source = "zero-order"
    elif variant == "proxy":
        extract.proxy_model = str(Path(stream) / PROXY_DIR)
    elif variant == "hidden-clusters":
        spec.clustering.features = "hidden"
    elif variant == "density-split":
        spec.selection.budget_split = "density"
    elif variant == "mastered-size":
        spec.selection.mastered_budget = "size"
    elif variant == "stratified-rehearsal":
        spec.selection.mastered_rehearsal = "stratified"
    elif variant == "paper":
        paper_behaviour(spec)
    elif variant in ("repair", "repair-interleaved"):
        # What the spec refuses with it (expansion, one epoch) is checked by `validated`.
        spec.training.repair.fraction = REPAIR_FRACTION
        spec.training.repair.placement = "interleaved" if variant == "repair-interleaved" else "after"
    elif variant == "ewc":
        spec.training.ewc.lambda_ = EWC_LAMBDA
    elif (refresh := refresh_policy(variant)) is not None:
        extract.refresh = refresh[0]
        if refresh[0] == "every-n-steps":
            extract.refresh_every = int(refresh[1])
        else:
            extract.refresh_fraction = float(refresh[1])
    elif variant == "last-layer":
        extract.layers = ["last"]
    elif variant == "prune-extract":
        spec.prune.hidden_states = "extract"


def validated(run: Any, name: str, stream: str | Path) -> Any:
    """The spec of `name`'s run validated as the spec would be with that strategy in it: the
    spec's own rules, so a variant never needs checks of its own. ValidationError when refused."""
    varied, strategy = apply(run, name, stream)
    return LifelongRunSpec.model_validate({**varied.spec.to_dict(), "strategy": strategy})


def paper_behaviour(spec: Any) -> None:
    """Set the clustering, selection and prune rules the paper is silent about to its behaviour."""
    c, sel, pr = spec.clustering, spec.selection, spec.prune
    c.nredo, c.k_rule, c.stability_seeds, c.sweep = 1, "elbow", 0, "full"
    sel.ccs_bin_rule, sel.diffuse, sel.mastered = "fixed", "none", "none"
    pr.max_cluster_fraction, pr.redundancy, pr.hidden_states = 1.0, "hidden", "after-train"
