"""Evaluation metrics: per-sample scores and the lifelong aggregates of Table 2 (docs/method.md §11).

Per sample: exact match (on the first line), box IoU and sentence BLEU, the metrics the eval
suite names (`spec.EvalTask.metric`); the comparison rule of each is above `METRICS`.
Aggregates over the per-step skill scores P_s^t: average accuracy, forgetting rate (the paper's
S×T denominator, and the "taught pairs only" variant) and relative gain, all pure functions of
plain dicts.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def normalise_answer(text: str) -> str:
    """Lowercase, trim, collapse whitespace, drop trailing punctuation ("Yes." == "yes")."""
    return _SPACE.sub(" ", text.lower().strip()).rstrip(string.punctuation).rstrip()


def first_line(text: str) -> str:
    """The first non-blank line: an instruct model may add an explanation after its answer."""
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def exact_match(pred: str, ref: str) -> float:
    """1.0 if the normalised first line of the prediction equals the normalised reference,
    else 0.0. A reference of several lines is compared with the whole prediction."""
    ref_lines = [line for line in ref.strip().splitlines() if line.strip()]
    candidate = first_line(pred) if len(ref_lines) <= 1 else pred
    return float(normalise_answer(candidate) == normalise_answer(ref))


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers in `text` as a box (x1, y1, x2, y2), corners ordered.

    Accepts the usual "[0.1, 0.2, 0.5, 0.6]" as well as looser generations ("0.1 0.2 0.5
    0.6"); swapped corners are put in order. None if fewer than four numbers.
    """
    nums = [float(m) for m in _NUMBER.findall(text)[:4]]
    if len(nums) < 4:
        return None
    x1, y1, x2, y2 = nums
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou(pred_text: str, ref_text: str) -> float:
    """Intersection over union of the boxes in two texts; 0.0 if either is unparseable or
    the union has no area."""
    a, b = parse_box(pred_text), parse_box(ref_text)
    if a is None or b is None:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(pred: str, ref: str, max_n: int = 4) -> float:
    """Sentence BLEU of whitespace tokens against one reference, in [0, 1].

    Smoothing: Lin & Och (2004) add-one for n > 1, p_n = (matches_n + 1) / (total_n + 1)
    (Chen & Cherry 2014 call it "method 2"; NLTK's SmoothingFunction().method2); unigram
    precision is unsmoothed, so a prediction sharing no word with the reference scores 0.
    Geometric mean with uniform weights, times the brevity penalty exp(1 − r/c) for c < r.
    """
    p_toks, r_toks = pred.split(), ref.split()
    if not p_toks or not r_toks:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        cand, refc = _ngrams(p_toks, n), _ngrams(r_toks, n)
        matches = sum(min(c, refc[g]) for g, c in cand.items())
        total = sum(cand.values())
        if n == 1:
            if matches == 0:
                return 0.0
            log_p += math.log(matches / total)
        else:
            log_p += math.log((matches + 1) / (total + 1))
    c, r = len(p_toks), len(r_toks)
    brevity = 1.0 if c >= r else math.exp(1.0 - r / c)
    return brevity * math.exp(log_p / max_n)


# The comparison rule of each metric. Every prediction has already been cut at the model's
# end-of-turn / EOS token (evaluation.generate). exact_match: the prediction's first non-blank
# line, normalised (`normalise_answer`), equals the normalised reference. iou: the first four
# numbers of the prediction form the box. bleu: the whole prediction against the reference.
METRICS: dict[str, Callable[[str, str], float]] = {"exact_match": exact_match, "iou": box_iou, "bleu": bleu}


def score(metric_name: str, pred: str, ref: str) -> float:
    """The named per-sample metric (see `METRICS`)."""
    try:
        fn = METRICS[metric_name]
    except KeyError:
        raise ValueError(f"unknown metric {metric_name!r}; known: {', '.join(sorted(METRICS))}") from None
    return fn(pred, ref)


def average_accuracy(skill_scores: dict[str, float]) -> float:
    """Mean over skills of one step's scores (Table 2's "avg acc", as a fraction)."""
    if not skill_scores:
        raise ValueError("no skill scores to average")
    return sum(skill_scores.values()) / len(skill_scores)


def _drops(history: list[dict[str, float]]) -> list[float]:
    """Relative drops max(P_s^{t-1} − P_s^t, 0) / P_s^{t-1} × 100 of every (skill, step t ≥ 1)
    pair scored at both steps with P_s^{t-1} > 0 (from zero nothing can be forgotten)."""
    return [max(prev[s] - cur[s], 0.0) / prev[s] * 100.0
            for prev, cur in zip(history, history[1:])
            for s in prev if s in cur and prev[s] > 0]


def forgetting_rate(history: list[dict[str, float]]) -> float:
    """The paper's forgetting rate in percent: the sum of the relative drops (`_drops`) divided by
    S × T, S = skills scored at any step, T = steps after the first (t ≥ 1).

    A pair that cannot be forgotten from (P_s^{t-1} = 0, or a skill not scored at t−1 or t)
    counts as 0 in the sum but still in the denominator, so one near-zero score that falls to
    zero moves the rate by at most 100 / (S × T) points. 0.0 with fewer than two steps.
    """
    if len(history) < 2:
        return 0.0
    skills = {s for step in history for s in step}
    return sum(_drops(history)) / (len(skills) * (len(history) - 1))


def forgetting_rate_taught(history: list[dict[str, float]]) -> float:
    """Forgetting averaged over the eligible pairs only (P_s^{t-1} > 0: skills already taught).

    Our earlier definition, kept as a second figure: it says how much of what was learned is
    lost, but a single near-zero score that falls to zero dominates it (0.008 → 0 is 100%).
    0.0 with fewer than two steps or no eligible pair.
    """
    drops = _drops(history)
    return sum(drops) / len(drops) if drops else 0.0


def best_per_skill(history: list[dict[str, float]]) -> dict[str, float]:
    """Best score of each skill over a run's steps (the reference of `relative_gain`)."""
    best: dict[str, float] = {}
    for step in history:
        for s, v in step.items():
            best[s] = max(v, best.get(s, v))
    return best


def relative_gain(final: dict[str, float], best_sequential: dict[str, float]) -> float:
    """Mean over skills of P_s^T / best sequential P_s × 100 (percent).

    Skills without a positive reference (absent, or 0 in sequential training) are skipped:
    the ratio is undefined there. Raises if no skill is left.
    """
    ratios = [final[s] / best_sequential[s] * 100.0
              for s in final if best_sequential.get(s, 0.0) > 0]
    if not ratios:
        raise ValueError("no skill has a positive sequential reference score")
    return sum(ratios) / len(ratios)
