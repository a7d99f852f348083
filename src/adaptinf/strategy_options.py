"""Each built-in strategy's options (`spec.strategyOptions`): name, type, default, bounds.

The one place they are declared: `Strategy.defaults` of the registered classes is filled from
here (`selection.base.register`), the spec validates `strategyOptions` against it, and the
stages read the values in effect through `resolve`. It lives outside `adaptinf.selection`
and imports nothing heavy because the operator validates specs without torch or numpy.
docs/options.md §8 lists the same table (a test keeps the two equal).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WHERE = "strategyOptions"


@dataclass(frozen=True)
class Option:
    """One option: `kind` is int, float, str or bool; a None default means "chosen automatically"
    (None is then accepted too)."""
    default: Any
    kind: type
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    def check(self, value: Any, where: str) -> Any:
        """The value normalised to `kind` (1 → 1.0 for a float, "1e5" → 100000.0 as pydantic's
        lax mode reads the local YAML's numbers; PyYAML reads `1e5` as a string), or ValueError."""
        if value is None and self.default is None:
            return None
        given, value = value, self._coerce(value, where)
        if self.choices and value not in self.choices:
            raise ValueError(f"{where}: must be one of {', '.join(self.choices)}, got {given!r}")
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
            raise ValueError(f"{where}: must be {'>' if self.exclusive_minimum else '>='} {self.minimum:g}, "
                             f"got {given!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{where}: must be <= {self.maximum:g}, got {given!r}")
        return value

    def _coerce(self, value: Any, where: str) -> Any:
        name = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}[self.kind]
        bad = ValueError(f"{where}: must be {name}" + (" or null" if self.default is None else "")
                         + f", got {value!r}")
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise bad
        if self.kind is str:
            if isinstance(value, str):
                return value
            raise bad
        if isinstance(value, bool):          # bool is an int subclass: true is no number here
            raise bad
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise bad
            return int(value)
        return float(value)


_K = Option(None, int, "number of k-means clusters; null: chosen by the clustering.kRule over kMin..kMax",
            minimum=1)

# Strategies not listed take no option.
STRATEGY_OPTIONS: dict[str, dict[str, Option]] = {
    "semdedup": {"k": _K},
    "density": {
        "k": _K,
        # The public code's default; C's scale depends on the features (selection/density.py).
        "temperature": Option(0.5, float, "τ of softmax(complexity / τ) over clusters", minimum=0,
                              exclusive_minimum=True),
        "neighbours": Option(20, int, "nearest other centroids in d_inter (capped at k − 1)", minimum=1),
        "within": Option("dedup", str, "rule inside a cluster: least redundant, farthest from the centroid, "
                                       "or uniform", choices=("dedup", "hard", "random")),
        "balance": Option(0.0, float, "each cluster gets at least balance · T / k samples", minimum=0,
                          maximum=1),
    },
    "coincide": {
        "k": _K,
        "temperature": Option(1.0, float, "τ of softmax(transferability / density / τ) over clusters", minimum=0,
                              exclusive_minimum=True),
        "bandwidth": Option(1.0, float, "σ of the Gaussian kernel (density and MMD prototypes)", minimum=0,
                            exclusive_minimum=True),
        "similarity_cap": Option(0.9, float, "centroid pairs more similar than this are left out of "
                                             "transferability", minimum=-1, maximum=1),
    },
    "replay": {"fraction": Option(0.1, float, "share of the old samples replayed with the new dataset",
                                  minimum=0, maximum=1)},
    "ewc": {
        # On the raw Fisher scale, chosen on the quick multimodal stream (2 seeds, λ = 1e2..1e6,
        # docs/options.md §4): 1e5 forgot least while still learning the new datasets.
        "lambda": Option(1e5, float, "λ of the penalty (λ/2) Σ F (θ − θ*)²", minimum=0),
        # The Fisher is a mean: a seeded subset estimates it and bounds its cost on big steps.
        "fisher_samples": Option(1024, int, "training samples per step that estimate the Fisher", minimum=1),
    },
}


def defaults(strategy: str) -> dict[str, Any]:
    """The strategy's options with their defaults ({} for one that takes none)."""
    return {name: opt.default for name, opt in STRATEGY_OPTIONS.get(strategy, {}).items()}


def check(strategy: str, given: Mapping[str, Any], where: str = WHERE) -> dict[str, Any]:
    """`given` validated against the strategy's options and normalised; ValueError naming
    `<where>.<key>`, the strategy and its options otherwise."""
    known = STRATEGY_OPTIONS.get(strategy, {})
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in known:
            takes = f"its options: {', '.join(sorted(known))}" if known else "it takes none"
            raise ValueError(f"{where}.{key}: strategy {strategy!r} has no option {key!r} ({takes})")
        out[key] = known[key].check(value, f"{where}.{key}")
    return out


def resolve(strategy: str, given: Mapping[str, Any], where: str = WHERE) -> dict[str, Any]:
    """The options in effect: the defaults updated with the checked `given` ones."""
    return {**defaults(strategy), **check(strategy, given, where)}
