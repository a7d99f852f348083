"""What one extracted row costs against one trained sample, per gradient layer: the floor of
any refresh policy's selection / train ratio.

Every refresh policy must compute the new dataset's features with the trained model, so a step's
selection / train ratio is at least N_new · c_extract / (T · epochs · c_train) (docs/comparison.md,
"Refresh policies on real weights"). This bench measures c_extract / c_train on the same model
and records, in one run, for the extract settings a user can choose:

- `middle`: the default, LoRA gradients of the middle decoder layer (the paper's best);
- `last`: `extract.layers: [last]` (the paper's layer ablation), whose backward stops one
  layer below the head;
- `no-grads`: hidden states and scores only (what `clustering.features: hidden` needs, the
  paper's Table-3 ablation), one forward;

and one epoch of LoRA training on the same records. Each pass runs once untimed, then `--repeat`
times interleaved with the others; the fastest of each is reported (the others on the machine
slow every pass alike). `floor` is the ratio's lower bound for `--new` rows, T = `--budget`
and `--epochs` (default: the SmolLM2 text stream's step 2: 203 new rows, T = 80, 3 epochs).

    python bench/feature_layers.py --threads 1                      # the tiny demo model
    python bench/feature_layers.py --threads 1 --model models/smollm2-135m --records skewed-text-large/datasets
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
from _common import Timer, emit, machine, pick_device, set_threads  # noqa: E402
from _lora_records import add_args, epoch_trainer, load  # noqa: E402

from adaptinf.features.extract import ExtractConfig, extract_features  # noqa: E402
from adaptinf.model.encoding import Encoder  # noqa: E402
from adaptinf.model.loading import decoder_layers  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(p)
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each pass (the fastest counts)")
    p.add_argument("--new", type=int, default=203, help="new rows a step must extract (for `floor`)")
    p.add_argument("--budget", type=int, default=80, help="T, samples trained a step (for `floor`)")
    p.add_argument("--epochs", type=int, default=3, help="epochs a step trains (for `floor`)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-feature-layers-") as tmp:
        bundle, records = load(args, Path(tmp), device)
        encoder = Encoder(bundle, 2048)
        n_layers = len(decoder_layers(bundle.model))
        common = {"projection_dim": args.proj_dim, "batch_size": args.batch_size, "seed": args.seed}
        passes = {
            "middle": ExtractConfig(layers=[n_layers // 2], **common),
            "last": ExtractConfig(layers=[n_layers - 1], **common),
            "no-grads": ExtractConfig(layers=[n_layers // 2], grads=False, **common),
        }
        run_train = epoch_trainer(bundle, encoder, records, args)

        def run(name: str) -> None:
            if name == "train":
                run_train()
            else:
                extract_features(bundle, encoder, records, passes[name], progress=False)

        names = (*passes, "train")
        for name in names:
            run(name)                                               # warm-up
        best = {name: float("inf") for name in names}
        for _ in range(args.repeat):
            for name in names:
                with Timer(device) as t:
                    run(name)
                best[name] = min(best[name], t.seconds)
        per_row = {name: best[name] / len(records) for name in names}
        result: dict[str, Any] = {
            "bench": "feature_layers", "model": str(args.model or "tiny demo model"), "layers": n_layers,
            "samples": len(records), "repeat": args.repeat,
            "train_s_per_sample_epoch": float(f"{per_row['train']:.4g}"),
            "floor_for": {"new": args.new, "budget": args.budget, "epochs": args.epochs},
        }
        for name in passes:
            ratio = per_row[name] / per_row["train"]
            result[name] = {"s_per_row": float(f"{per_row[name]:.4g}"), "row_vs_trained_sample": round(ratio, 3),
                            "floor": round(args.new * ratio / (args.budget * args.epochs), 3)}
        result["machine"] = machine(device)
        return emit(result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # transformers' deprecation notices would bury the JSON line
    main()
