"""One lifelong run on the demo stream: what selection costs next to training.

Writes the demo stream and tiny model (`adaptinf demo-data`), runs it with the local backend
(`adaptinf run-local`: extract → cluster-select → train → eval → prune per step, Lite-Adapt-∞
by default, MLflow off) and reads `W/<run>/summary.json`'s `seconds` per stage. Reported:
the overhead ratio (extract + cluster-select + prune) / train per step, and summed over the
selection steps (t ≥ 1; step 0 instruction-tunes the base on the whole first dataset, as
LLaVA-665K does in the paper). The paper's Lite-Adapt-∞ spends 35.4 h selecting for 21 h of
training (paper Table 6, docs/method.md §14): a ratio of 1.7.

    python bench/step.py --threads 1                   # the default demo stream
    python bench/step.py --size quick --steps 3        # a smaller stream, its first 3 datasets
    python bench/step.py --threads 1 --refresh every-step,every-n-steps:2,fraction:0.25

`--refresh` runs steps t ≥ 1 of the same stream again once per `extract.refresh` policy, one
run after the other, each from a copy of the first run's step 0 (the initial tuning, which no
policy changes: `adaptinf compare` shares it the same way), and adds `policies`: each policy's
ratio, selection and train seconds, the share of features computed at t ≥ 1 and its final
scores, side by side.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, cpu_threads, emit, machine, set_threads  # noqa: E402

import torch  # noqa: E402

SELECTION_STAGES = ("extract", "cluster-select", "prune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("default", "quick"), default="default", help="demo stream size")
    p.add_argument("--steps", type=int, default=None, help="run only the first N datasets")
    p.add_argument("--strategy", default=None, help="override the stream's strategy (lite-adapt-inf)")
    p.add_argument("--projection-dim", type=int, default=None,
                   help="override the stream's extract.projectionDim (2048) in lifelongrun.yaml")
    p.add_argument("--threads", type=int, default=None, help="torch and faiss CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="stream, model and run artifacts (default: a temp dir)")
    p.add_argument("--refresh", default=None, type=policies,
                   help="comma-separated extract.refresh policies run side by side: every-step, "
                        "every-n-steps:N, fraction:F (e.g. every-step,every-n-steps:2,fraction:0.25)")
    return p.parse_args(argv)


def policies(text: str) -> list[dict[str, Any]]:
    """"every-step,every-n-steps:2,fraction:0.25" → the extract fields of each policy."""
    out: list[dict[str, Any]] = []
    for item in text.split(","):
        name, _, value = item.strip().partition(":")
        try:
            if name == "every-step" and not value:
                out.append({"refresh": name})
            elif name == "every-n-steps":
                out.append({"refresh": name, "refreshEvery": int(value)})
            elif name == "fraction":
                out.append({"refresh": name, "refreshFraction": float(value)})
            else:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected every-step, every-n-steps:N or fraction:F") from None
    return out


def computed_share(summary: dict[str, Any], run_dir: Path, run: str) -> float | None:
    """Features computed at steps t ≥ 1 over pool rows at those steps (1.0: every-step)."""
    import json

    from adaptinf import layout
    computed = rows = 0
    for s in summary["steps"]:
        if s["step"] < 1:
            continue
        prefix = run_dir / layout.stage_prefix(run, s["step"], "extract")
        for marker in sorted(prefix.glob("shard-*/_COMMITTED.json")):
            shard = json.loads(marker.read_text())["summary"]
            computed += int(shard.get("features_computed", shard.get("samples", 0)))
            rows += int(shard.get("samples", 0))
    return round(computed / rows, 3) if rows else None


def overhead(summary: dict[str, Any]) -> dict[str, Any]:
    """Per-step and summed (selection steps t ≥ 1) selection/training time ratios."""
    steps = []
    sel_total = train_total = 0.0
    for s in summary["steps"]:
        secs = s.get("seconds", {})
        sel = sum(secs.get(k, 0.0) for k in SELECTION_STAGES)
        train = secs.get("train", 0.0)
        steps.append({"step": s["step"], "dataset": s["dataset"], "pool_size": s.get("pool_size"),
                      "selected": s.get("selected"), "seconds": secs, "selection_s": round(sel, 3),
                      "ratio": round(sel / train, 3) if train > 0 else None})
        if s["step"] >= 1:
            sel_total += sel
            train_total += train
    return {"steps": steps, "selection_s": round(sel_total, 3), "train_s": round(train_total, 3),
            "ratio": round(sel_total / train_total, 3) if train_total > 0 else None}


def set_projection_dim(run_yaml: Path, dim: int) -> None:
    import yaml
    doc = yaml.safe_load(run_yaml.read_text(encoding="utf-8"))
    doc["spec"].setdefault("extract", {})["projectionDim"] = dim
    run_yaml.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    from adaptinf.data.demo import write_demo_stream
    from adaptinf.model.tiny import build_tiny_model
    from adaptinf.runner import collect, run_local

    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        work = Path(args.workdir or tmp)
        stream = work / "stream"
        write_demo_stream(stream, seed=args.seed, size=args.size)
        build_tiny_model(stream / "model", seed=args.seed)  # what `adaptinf demo-data` writes
        if args.projection_dim:
            set_projection_dim(stream / "lifelongrun.yaml", args.projection_dim)
        run, datasets = collect([str(stream)])
        datasets = datasets[:args.steps] if args.steps else datasets
        with cpu_threads(args.threads), Timer() as wall:
            summary = run_local(run, datasets, work / "run", strategy=args.strategy, seed=args.seed,
                                tracking=False, progress=False)
        side = [_policy_run(run, datasets, work / "run", work / f"run-{i}", args, extract)
                for i, extract in enumerate(args.refresh or [])]
    result = overhead(summary)
    return emit({"bench": "step", **machine(torch.device("cpu")), "size": args.size,
                 "projection_dim": run.resolved_spec().extract.projection_dim,
                 "strategy": summary.get("strategy"), "datasets": len(datasets),
                 "wall_s": round(wall.seconds, 2), **result,
                 "final": summary.get("final"), **({"policies": side} if side else {})})


def _policy_run(run: Any, datasets: list[Any], first: Path, workdir: Path, args: argparse.Namespace,
                extract: dict[str, Any]) -> dict[str, Any]:
    """Steps t ≥ 1 of the stream under an extract.refresh policy, from a copy of the first run's
    step 0: its ratio and what it computed."""
    import shutil

    from adaptinf.runner import run_local
    from adaptinf.spec import LifelongRunSpec
    spec = run.spec.to_dict()
    spec.setdefault("extract", {}).update(extract)
    varied = run.model_copy(update={"spec": LifelongRunSpec.model_validate(spec)})
    shutil.copytree(first, workdir)
    with cpu_threads(args.threads):
        # Step 0 keeps the spec it ran with (continue_anyway); steps 1.. run again with the policy.
        summary = run_local(varied, datasets, workdir, strategy=args.strategy, seed=args.seed,
                            tracking=False, progress=False, continue_anyway=True, restart_from=1)
    got = overhead(summary)
    return {"extract": extract, "ratio": got["ratio"], "selection_s": got["selection_s"], "train_s": got["train_s"],
            "per_step_ratio": [s["ratio"] for s in got["steps"]],
            "computed_share": computed_share(summary, workdir, varied.name), "final": summary.get("final")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    main()
