"""The comparison table (paper Table 2) and its figures, from the runs' summary.json files.

Pure functions of plain dicts, so the numbers in `table.json` can be checked against the
definitions in `adaptinf.metrics` (docs/method.md §11) without running anything:

- relative gain of a run: mean over skills of its final score / the best score that skill
  reached in the *sequential* run of the same seed × 100;
- forgetting rate (the paper's S×T denominator) and its variant over taught pairs only
  (`forgetting_rate_taught`), recomputed from the run's per-step scores; None for a joint run
  (`multitask`: one training, no sequence of models to forget along, the paper's "–");
- average accuracy: mean over skills of the final scores;
- mean ± standard deviation over seeds (sample std, ddof = 1; 0 with a single seed);
- the paired difference of each figure to `BASELINE` (random) over seeds, with a bootstrap
  interval (`stats.py`), and the same for each `STRATEGY@VARIANT` to its plain `STRATEGY`
  (`vs_plain`) when both ran;
- selection / train: (extract + cluster-select + prune seconds, and the repair pass's loss
  checks) / train seconds of the mean stage times over seeds, steps ≥ 1 (what issue 17 calls
  the cost of selection).
"""
from __future__ import annotations

import math
from typing import Any

from adaptinf.metrics import average_accuracy, best_per_skill, forgetting_rate, forgetting_rate_taught, relative_gain
from adaptinf.runner import stats
from adaptinf.runner.noise_floor import forgetting_noise_floor

REFERENCE = "sequential"
BASELINE = "random"      # the paired differences and their intervals are against this strategy
# forgetting_floor: the forgetting rate eval sampling alone gives a run that forgets nothing
# (noise_floor.py); None when the eval counts are unknown.
FIGURES = ("relative_gain", "forgetting_rate", "forgetting_rate_taught", "forgetting_floor", "avg_acc")
PAIRED = ("relative_gain", "forgetting_rate", "avg_acc")
SELECTION_STAGES = ("extract", "cluster-select", "prune", "repair-check")


def history(summary: dict[str, Any]) -> list[dict[str, float]]:
    """Per-step skill scores of a run (steps whose dataset was unusable have none)."""
    return [s["skills"] for s in summary["steps"] if s.get("skills")]


def curve(summary: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """(step, skill scores) of every evaluated step: a joint run has step 0 and its last step only."""
    return [(s["step"], s["skills"]) for s in summary["steps"] if s.get("skills")]


def run_figures(summary: dict[str, Any], reference: dict[str, Any],
                eval_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """One run's Table 2 figures against the sequential run of the same seed; `eval_counts`
    (records per skill) gives the forgetting noise floor."""
    scores = history(summary)
    if not scores:
        raise ValueError(f"run {summary.get('run')!r} ({summary.get('strategy')}) has no evaluated step")
    seconds: dict[str, float] = {}
    for step in summary["steps"][1:]:    # step 0 (initial tuning) is shared by every strategy
        for stage, s in (step.get("seconds") or {}).items():
            seconds[stage] = seconds.get(stage, 0.0) + s
    joint = bool(summary.get("joint"))
    try:
        gain = relative_gain(scores[-1], best_per_skill(history(reference)))
    except ValueError:   # sequential training never scored above 0 on any skill: no reference
        gain = None
    return {
        "relative_gain": gain,
        "forgetting_rate": None if joint else forgetting_rate(scores),
        "forgetting_rate_taught": None if joint else forgetting_rate_taught(scores),
        "forgetting_floor": None if joint or not eval_counts else forgetting_noise_floor(scores, eval_counts),
        "avg_acc": average_accuracy(scores[-1]),
        "final_skills": scores[-1],
        "trained_samples": sum(int(s.get("selected") or 0) for s in summary["steps"][1:]),
        "seconds": seconds,
    }


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std of the defined values; (None, None) when none is."""
    values = [v for v in values if v is not None]
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def build_table(summaries: dict[str, dict[int, dict[str, Any]]],
                eval_counts: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """`summaries[strategy][seed]` → one row per strategy (mean, _std, per-seed values).

    Every seed needs a sequential run: it is the reference of the relative gain.
    """
    refs = summaries.get(REFERENCE)
    if not refs:
        raise ValueError(f"the comparison needs the {REFERENCE!r} strategy (reference of the relative gain)")
    rows, figures = [], {}
    for strategy, by_seed in summaries.items():
        missing = sorted(set(by_seed) - set(refs))
        if missing:
            raise ValueError(f"no {REFERENCE!r} run for seed(s) {missing} of {strategy!r}")
        per_seed = figures[strategy] = {seed: run_figures(s, refs[seed], eval_counts) for seed, s in sorted(by_seed.items())}
        row: dict[str, Any] = {"strategy": strategy, "seeds": sorted(per_seed)}
        for key in FIGURES:
            row[key], row[f"{key}_std"] = mean_std([f[key] for f in per_seed.values()])
        skills = sorted({k for f in per_seed.values() for k in f["final_skills"]})
        row["final_skills"] = {k: mean_std([f["final_skills"][k] for f in per_seed.values()
                                            if k in f["final_skills"]])[0] for k in skills}
        row["trained_samples"] = mean_std([f["trained_samples"] for f in per_seed.values()])[0]
        stages = sorted({k for f in per_seed.values() for k in f["seconds"]})
        row["seconds"] = {k: mean_std([f["seconds"].get(k, 0.0) for f in per_seed.values()])[0] for k in stages}
        row["selection_train_ratio"] = selection_ratio(row["seconds"])
        row["per_seed"] = {str(seed): {k: f[k] for k in FIGURES} for seed, f in per_seed.items()}
        rows.append(row)
    _check_all_paired(rows, summaries)
    add_pairs(rows, figures)
    return sorted(rows, key=lambda r: -(r["relative_gain"] if r["relative_gain"] is not None else -math.inf))


def selection_ratio(seconds: dict[str, float]) -> float | None:
    """(extract + cluster-select + prune) / train; None without training time."""
    train = seconds.get("train", 0.0)
    return sum(seconds.get(k, 0.0) for k in SELECTION_STAGES) / train if train > 0 else None


def _check_paired(summaries: dict[str, dict[int, dict[str, Any]]], strategy: str, baseline: str = BASELINE) -> None:
    """Paired means the same step-0 scores per seed: compare shares step 0, a mix-up must not pass."""
    for seed, summary in summaries[strategy].items():
        base = summaries[baseline].get(seed)
        if base is not None and history(summary)[:1] != history(base)[:1]:
            raise ValueError(f"{strategy!r} and {baseline!r} of seed {seed} do not share step 0: "
                             "their difference is not a paired one")


def _check_all_paired(rows: list[dict[str, Any]], summaries: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Every pair add_pairs will form shares step 0 per seed."""
    for r in rows:
        if BASELINE in summaries and r["strategy"] != BASELINE:
            _check_paired(summaries, r["strategy"])
        plain, sep, _ = r["strategy"].partition("@")
        if sep and plain in summaries:
            _check_paired(summaries, r["strategy"], plain)


def add_pairs(rows: list[dict[str, Any]], figures: dict[Any, dict[Any, dict[str, Any]]]) -> None:
    """Each row's `<figure>_vs_random` (mean paired difference over seeds) and `_vs_random_ci`, and
    each `STRATEGY@VARIANT` row's `vs_plain`: its paired differences to `STRATEGY` (same seeds),
    {"strategy", "seeds", <figure>: {"diff", "ci"} or None}, when the plain strategy ran.
    `figures[strategy][seed]` are the runs' `run_figures` (or a table's `per_seed`)."""
    for r in rows:
        if BASELINE in figures and r["strategy"] != BASELINE:
            paired = stats.paired_differences(figures[r["strategy"]], figures[BASELINE], PAIRED)
            r["paired_seeds"] = paired["seeds"]
            for key in PAIRED:
                got = paired[key]
                r[f"{key}_vs_{BASELINE}"] = got["diff"] if got else None
                r[f"{key}_vs_{BASELINE}_ci"] = got["ci"] if got else None
        plain, sep, _ = r["strategy"].partition("@")
        if sep and plain in figures:
            paired = stats.paired_differences(figures[r["strategy"]], figures[plain], PAIRED)
            r["vs_plain"] = {"strategy": plain, "seeds": paired["seeds"], **{k: paired[k] for k in PAIRED}}


def _pm(mean: float | None, std: float | None, digits: int = 1, scale: float = 1.0) -> str:
    if mean is None:
        return "–"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _diff(r: dict[str, Any], key: str, scale: float = 1.0) -> str:
    """"+3.1 [−0.4, +6.0]": mean paired difference to the baseline and its interval."""
    d, ci = r.get(f"{key}_vs_{BASELINE}"), r.get(f"{key}_vs_{BASELINE}_ci")
    if d is None:
        return "–"
    return f"{scale * d:+.1f} [{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]"


def _diff_plain(r: dict[str, Any], key: str, scale: float = 1.0) -> str:
    got = r["vs_plain"][key]
    if got is None:
        return "–"
    d, ci = got["diff"], got["ci"]
    return f"{scale * d:+.1f} [{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]"


def variant_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The paired differences of each variant to its plain strategy (none: no lines)."""
    varied = [r for r in rows if "vs_plain" in r]
    if not varied:
        return []
    level = round(100 * stats.LEVEL)
    lines = ["", f"Paired difference of each variant to its plain strategy (same seed), mean over seeds "
             f"[{level}% percentile-bootstrap interval over seeds], and the selection / train time ratios:", "",
             "| variant | Δ relative gain (points) | Δ forgetting (points) | Δ final avg acc (points) "
             "| selection / train | plain's selection / train | seeds |",
             "|---|---|---|---|---|---|---|"]
    by_name = {r["strategy"]: r for r in rows}
    for r in varied:
        plain = by_name[r["vs_plain"]["strategy"]]
        lines.append(f"| {r['strategy']} | {_diff_plain(r, 'relative_gain')} | {_diff_plain(r, 'forgetting_rate')} "
                     f"| {_diff_plain(r, 'avg_acc', 100)} | {_ratio(r)} | {_ratio(plain)} | {r['vs_plain']['seeds']} |")
    return lines


def _ratio(r: dict[str, Any]) -> str:
    v = r.get("selection_train_ratio")
    return "–" if v is None else f"{v:.2f}"


def paired_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The table of paired differences to the baseline, or a line saying why there is none."""
    if not any(r["strategy"] == BASELINE for r in rows):
        return ["", f"No paired differences: the comparison has no {BASELINE!r} run to pair with."]
    level = round(100 * stats.LEVEL)
    lines = ["", f"Paired difference to {BASELINE} (same seed's step 0 and eval set), mean over seeds "
             f"[{level}% percentile-bootstrap interval over seeds]; an interval that excludes 0 separates the "
             "two strategies:", "",
             "| strategy | Δ relative gain (points) | Δ forgetting (points) | Δ final avg acc (points) | seeds |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["strategy"] != BASELINE:
            lines.append(f"| {r['strategy']} | {_diff(r, 'relative_gain')} | {_diff(r, 'forgetting_rate')} "
                         f"| {_diff(r, 'avg_acc', 100)} | {r['paired_seeds']} |")
    return lines


def table_markdown(rows: list[dict[str, Any]], quality: dict[str, list[dict[str, Any]]] | None = None,
                   preamble: str = "", mix: dict[str, dict[str, dict[str, float]]] | None = None) -> str:
    """`table.md`: Table 2's columns, then cost, then — against the hidden skill labels — the
    clusters' quality and the skill mix of what was selected."""
    lines = [preamble.rstrip(), ""] if preamble else []
    lines += ["| strategy | relative gain % | forgetting % (S×T) | forgetting noise floor % "
              "| forgetting % (taught pairs only) "
              "| final avg acc % | samples trained (steps ≥ 1) | extract s | cluster-select s | prune s | train s "
              "| selection / train |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sec = r["seconds"]
        lines.append(f"| {r['strategy']} | {_pm(r['relative_gain'], r['relative_gain_std'])} "
                     f"| {_pm(r['forgetting_rate'], r['forgetting_rate_std'])} "
                     f"| {_pm(r['forgetting_floor'], r['forgetting_floor_std'])} "
                     f"| {_pm(r['forgetting_rate_taught'], r['forgetting_rate_taught_std'])} "
                     f"| {_pm(r['avg_acc'], r['avg_acc_std'], scale=100)} | {r['trained_samples']:.0f} "
                     f"| {sec.get('extract', 0):.1f} | {sec.get('cluster-select', 0):.1f} | {sec.get('prune', 0):.1f} "
                     f"| {sec.get('train', 0):.1f} | {_ratio(r)} |")
    checks = [f"{r['strategy']} {r['seconds']['repair-check']:.1f} s" for r in rows if r["seconds"].get("repair-check")]
    if checks:   # not a column of its own: only runs with training.repair have it
        lines += ["", "Selection / train also counts the repair pass's loss checks (training.repair), done "
                  "inside the train stage and left out of its seconds: " + ", ".join(checks) + ". Their samples "
                  "trained count the selection only, not the up to R repaired rows a step."]
    if any(r["forgetting_floor"] is not None for r in rows):
        lines += ["", "The forgetting noise floor is the forgetting rate that eval sampling alone gives a run "
                  "that forgets nothing, at this run's scores and eval records per skill (noise_floor.py): "
                  "a rate at or below it is no forgetting this eval can see."]
    lines += paired_markdown(rows)
    lines += variant_markdown(rows)
    skills = sorted({k for r in rows for k in r["final_skills"]})
    lines += ["", "Final score per skill (mean over seeds):", "",
              "| strategy | " + " | ".join(skills) + " |", "|---|" + "---|" * len(skills)]
    for r in rows:
        lines.append(f"| {r['strategy']} | " + " | ".join(
            f"{r['final_skills'][k]:.2f}" if k in r["final_skills"] else "–" for k in skills) + " |")
    if quality:
        lines += ["", "Clusters vs the hidden skill labels (mean over seeds, per step t ≥ 1):", "",
                  "| strategy | step | k | purity | NMI |", "|---|---|---|---|---|"]
        for strategy, steps in quality.items():
            for q in steps:
                lines.append(f"| {strategy} | {q['step']} | {q['k']:.1f} | {q['purity']:.3f} | {q['nmi']:.3f} |")
    if mix:
        skills = sorted({k for m in mix.values() for part in m.values() for k in part})
        lines += ["", "Share of each skill in the selected samples (steps t ≥ 1, all seeds), and in the pools they "
                  "were selected from (pruning strategies have pools of their own):", "",
                  "| strategy | " + " | ".join(skills) + " |", "|---|" + "---|" * len(skills)]
        pools: dict[tuple, list[str]] = {}
        for strategy, m in mix.items():
            lines.append(f"| {strategy} | " + " | ".join(f"{100 * m['selected'].get(k, 0):.1f}%" for k in skills) + " |")
            pools.setdefault(tuple(round(m["pool"].get(k, 0), 4) for k in skills), []).append(strategy)
        for shares, owners in pools.items():
            name = "pool" if len(pools) == 1 else f"pool of {', '.join(owners) if len(owners) < 4 else 'the others'}"
            lines.append(f"| *{name}* | " + " | ".join(f"{100 * v:.1f}%" for v in shares) + " |")
    return "\n".join(lines) + "\n"


def mean_curves(by_seed: dict[int, dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per-step skill scores averaged over seeds (the curves of Figure 3), keyed by step: only
    steps every seed evaluated (a joint run: step 0 and the last step)."""
    runs = [dict(curve(s)) for s in by_seed.values()]
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    out = {}
    for t in steps:
        skills = sorted({k for r in runs for k in r[t]})
        out[t] = {k: sum(r[t][k] for r in runs if k in r[t]) / sum(k in r[t] for r in runs) for k in skills}
    return out


def plot_strategies(summaries: dict[str, dict[int, dict[str, Any]]], metrics: dict[str, str] | None = None) -> Any:
    """One panel per skill, one line per strategy (mean over seeds after each step; Figure 3
    style). A joint run has only step 0 and its last step, joined by a straight line."""
    from adaptinf.evaluation.plots import skill_panels
    series = {name + (" (joint)" if any(s.get("joint") for s in by_seed.values()) else ""):
              sorted(mean_curves(by_seed).items()) for name, by_seed in summaries.items()}
    first = next(iter(next(iter(summaries.values())).values()))
    datasets = {s["step"]: s.get("dataset") for s in first["steps"]}
    return skill_panels(series, metrics, datasets, title="per-skill score after each step (mean over seeds)",
                        run=first.get("run", ""))
