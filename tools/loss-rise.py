#!/usr/bin/env python3
"""How much a step's training raised the answer loss of the pool rows it did not select, by skill
(the signal behind `training.repair`, docs/options.md §12).

    python tools/loss-rise.py WORKDIR RUN STEP --model BASE [--out rise.npy]

WORKDIR is a local store (a `run-local` workdir, or one run folder of `adaptinf compare`), RUN the
run's name, BASE the run's `model.base` folder. "Before" is extract's `perplexity` score of the
step (the model the step started from, or older where features were reused); "after" is a forward
with the step's trained adapter. Needs the `perplexity` scorer in the run's spec.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from adaptinf import layout
from adaptinf.data.records import load_jsonl
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import attach_adapter, load_base
from adaptinf.spec import LoraSpec
from adaptinf import threads
from adaptinf.training.repair import answer_nll


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("run")
    ap.add_argument("step", type=int)
    ap.add_argument("--model", required=True, help="the run's model.base folder")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--out", type=Path, help="save [before, after] per row here (.npy)")
    args = ap.parse_args()
    threads.apply()
    root = args.workdir
    records = {}
    for f in sorted(root.glob(f"{args.run}/steps/*/ingest/records.jsonl")):
        records.update({r.uid: r for r in load_jsonl(f.read_bytes())})
    extract = root / layout.stage_prefix(args.run, args.step, "extract")
    uids, before = [], []
    for shard in sorted(extract.glob("shard-*")):
        uids += json.loads((shard / "uids.json").read_text())
        before.append(np.log(np.load(shard / "scores" / "perplexity.npy")))
    if not uids:
        raise SystemExit(f"{extract}: no extract shard with a perplexity score")
    selected = set(json.loads((root / layout.stage_prefix(args.run, args.step, "cluster-select")
                               / "selection.json").read_text())["selected"])
    bundle = attach_adapter(load_base(args.model, dtype="float32"), LoraSpec(),
                            root / layout.stage_prefix(args.run, args.step, "train") / "adapter", trainable=False)
    rows = [records[u] for u in uids]
    after = answer_nll(bundle, Encoder(bundle, args.max_length), rows, batch_size=16)
    rise = after - np.concatenate(before)
    if args.out:
        np.save(args.out, np.stack([np.concatenate(before), after]))
    by: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for u, r, v in zip(uids, rows, rise):
        by[(r.skill or "-", u in selected)].append(float(v))
    print("skill      selected  rows  mean rise (nats)  rows rising > 0.1")
    for (skill, chosen), v in sorted(by.items()):
        a = np.array(v)
        print(f"{skill:10s} {str(chosen):8s} {len(a):5d}  {a.mean():+16.3f}  {np.mean(a > 0.1):17.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
