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
    return p.parse_args(argv)


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
    result = overhead(summary)
    return emit({"bench": "step", **machine(torch.device("cpu")), "size": args.size,
                 "projection_dim": run.resolved_spec().extract.projection_dim,
                 "strategy": summary.get("strategy"), "datasets": len(datasets),
                 "wall_s": round(wall.seconds, 2), **result,
                 "final": summary.get("final")})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    main()
