#!/usr/bin/env python3
"""What a λ of the EWC penalty means for a model: the penalty (λ/2) Σ F (θ − θ*)² that some
already trained updates of an adapter would have paid (docs/options.md §4).

    python tools/ewc-scale.py WORKDIR RUN STEP --model BASE --updated ADAPTER [ADAPTER ...] [--lambda 1e5]

WORKDIR is a local store (a `run-local` workdir, or one run folder of `adaptinf compare`), RUN
the run's name. The Fisher is estimated as the `ewc` regime estimates it (the run's maxLength,
batch size and seed + STEP; at most 1024 samples) on step STEP's selection at that step's trained
adapter (θ*). Each ADAPTER is an adapter trained from θ* (e.g. step STEP + 1's `train/adapter` of
several strategies that share step STEP, as `adaptinf compare`'s do).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file

from adaptinf import layout, threads
from adaptinf.data.pool import load_pool, load_records
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import attach_adapter, load_base
from adaptinf.spec import LifelongRunSpec
from adaptinf.store import LocalStore
from adaptinf.training import ewc

WEIGHTS = "adapter_model.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("run")
    ap.add_argument("step", type=int)
    ap.add_argument("--model", required=True, help="the run's model.base folder")
    ap.add_argument("--updated", type=Path, nargs="+", required=True, help="adapters trained from the step's")
    ap.add_argument("--lambda", dest="lam", type=float, default=ewc.DEFAULT_LAMBDA)
    args = ap.parse_args()
    threads.apply()
    store = LocalStore(args.workdir)
    spec = LifelongRunSpec.model_validate(store.read_json(layout.inputs_key(args.run, args.step))["run_spec"])
    selected = store.read_json(f"{layout.stage_prefix(args.run, args.step, 'cluster-select')}/selection.json")["selected"]
    records = load_records(store, load_pool(store, args.run, args.step), selected)
    anchor = args.workdir / layout.stage_prefix(args.run, args.step, "train") / "adapter"
    bundle = attach_adapter(load_base(args.model, dtype="float32"), spec.model.lora, anchor, trainable=False)
    fisher = ewc.diagonal_fisher(bundle, Encoder(bundle, spec.training.max_length), records,
                                 spec.training.batch_size, seed=spec.seed + args.step)
    # peft stores a weight without the adapter's name: `….lora_A.weight` for `….lora_A.default.weight`.
    fisher = {name.replace(".default.", "."): f for name, f in fisher.items()}
    before = load_file(str(anchor / WEIGHTS))
    total = sum(f.sum().item() for f in fisher.values())
    print(f"Fisher over {min(len(records), ewc.DEFAULT_MAX_SAMPLES)} of step {args.step}'s {len(records)} rows: sum {total:.4g}")
    for adapter in args.updated:
        after = load_file(str(adapter / WEIGHTS))
        missing = sorted(set(fisher) - set(after) | set(fisher) - set(before))
        if missing:
            raise SystemExit(f"{adapter}: no weight {missing[0]} (and {len(missing) - 1} more): not an adapter of this run")
        weighted = sum((fisher[k] * (after[k] - before[k]).float() ** 2).sum().item() for k in fisher)
        moved = sum(((after[k] - before[k]).float() ** 2).sum().item() for k in fisher)
        print(f"{adapter}: |Δθ|² {moved:.4g}, Σ F Δθ² {weighted:.4g}, penalty at λ = {args.lam:g}: "
              f"{0.5 * args.lam * weighted:.4g} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
