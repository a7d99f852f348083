"""The forgetting rate that eval sampling alone produces: what a measured rate must exceed to mean
anything.

A skill's score is a mean over its n eval records, an estimate of the model's accuracy on the
skill with a standard error of about sqrt(p(1 − p) / n). The forgetting rate sums only the
*drops* between consecutive steps (`metrics.forgetting_rate`), so estimation error never
cancels: a model that forgets nothing still shows a positive rate, largest for skills near 0
(0.04 → 0.02 is a 50% relative drop, one record of 50).

The floor here is the expected forgetting rate of a run that forgets nothing: at each step every
skill's true accuracy is its best score so far (non-decreasing by construction), each step's
score is drawn as Binomial(n_s, p) / n_s, and the rate of the drawn history is averaged over
`draws` histories. For exact match (0/1 per record) that is the sampling distribution; for BLEU
or IoU, whose per-record scores lie in [0, 1], a Bernoulli has the largest variance for a given
mean, so the floor is an upper bound. A strategy whose measured rate is at or below its floor
forgets nothing that this eval size can see; two strategies below their floors cannot be
ordered by forgetting, however the means fall.
"""
from __future__ import annotations

import numpy as np

from adaptinf.metrics import forgetting_rate

DRAWS = 2000


def forgets_nothing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The history of a run that never loses a skill: each score replaced by its best so far."""
    best: dict[str, float] = {}
    out = []
    for step in history:
        best = {**best, **{s: max(v, best.get(s, 0.0)) for s, v in step.items()}}
        out.append({s: best[s] for s in step})
    return out


def forgetting_noise_floor(history: list[dict[str, float]], eval_counts: dict[str, int],
                           draws: int = DRAWS, seed: int = 0) -> float | None:
    """Expected forgetting rate (percent) of `history` with its forgetting removed, from eval
    sampling alone; None when a skill's eval count is unknown or there is no second step."""
    if len(history) < 2 or any(eval_counts.get(s, 0) <= 0 for step in history for s in step):
        return None
    rng = np.random.default_rng(seed)
    truth = forgets_nothing(history)
    skills = sorted({s for step in truth for s in step})
    n = np.array([eval_counts[s] for s in skills])
    # draws × steps × skills binomial scores in one call; a skill not scored at a step is NaN.
    p = np.array([[step.get(s, np.nan) for s in skills] for step in truth])
    drawn = rng.binomial(n, np.nan_to_num(p), size=(draws, *p.shape)) / n
    rates = [forgetting_rate([{s: float(d[t, j]) for j, s in enumerate(skills) if not np.isnan(p[t, j])}
                              for t in range(len(truth))]) for d in drawn]
    return float(np.mean(rates))
