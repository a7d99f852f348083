"""The strategy and scorer names spec.py accepts are exactly what the registries provide (the
operator validates specs without importing the registries, which need torch and faiss)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptinf.spec import SCORERS, STRATEGIES, LifelongRunSpec

MIN = {"model": {"base": "m"}, "trainBudget": 1, "storage": {"uri": "s"}}


def test_names_match_the_registries():
    from adaptinf.scorers import available as scorers
    from adaptinf.selection import available as strategies
    assert sorted(STRATEGIES) == sorted(strategies()), "add the new strategy to adaptinf.spec.STRATEGIES"
    assert sorted(SCORERS) == sorted(scorers()), "add the new scorer to adaptinf.spec.SCORERS"


def test_unknown_names_are_rejected_with_the_known_ones():
    with pytest.raises(ValidationError, match=r"unknown strategy 'adapt-infinity'; known: adapt-inf,"):
        LifelongRunSpec.model_validate({**MIN, "strategy": "adapt-infinity"})
    with pytest.raises(ValidationError, match=r"unknown scorer\(s\) loss; known: el2n"):
        LifelongRunSpec.model_validate({**MIN, "scorers": ["el2n", "loss"]})
    assert LifelongRunSpec.model_validate({**MIN, "strategy": "random"}).strategy == "random"
