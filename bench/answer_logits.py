"""Logits at the answer positions only, and prune's hidden-states pass stopped at its layer,
against the full forwards they replace: the same model, records and passes in one run.

`model/answer_logits.py` applies the LM head at the positions that predict an answer token
(transformers' `logits_to_keep`); `model.partial_forward.layer_output` stops prune's
after-training forward at the hidden-state layer. Both give the same numbers as before: this
bench times them against the full forwards and reports the largest difference.

- extract: `extract_features` with gradients, hidden states and the four scores;
- prune: `extract_features(grads=False, scorers=())`, the after-training hidden states;
- train: one epoch of `train_model` (LoRA), the loss from kept logits vs transformers' loss.

"Full" is the current code with the head at every position and prune's pass run to the end.
The code before the change was slower still in two places this leaves out: extract's forwards
also built a KV cache, and prune's pass also computed token statistics nobody read, so the
extract and prune speedups are lower bounds of the change's. Training's full way is the old
path exactly (`model(**batch).loss`). Each pass runs both ways once untimed (warm-up), then
once each timed, the full way first: single timings, so small differences are noise.

    python bench/answer_logits.py --threads 1                       # the tiny demo model
    adaptinf models prepare smollm2-135m --out models/smollm2-135m
    adaptinf demo-data --stream skewed --modality text --size small --vocabulary large --out skewed-text-large
    python bench/answer_logits.py --threads 1 --model models/smollm2-135m --records skewed-text-large/datasets
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, emit, machine, pick_device, set_threads  # noqa: E402
from _lora_records import add_args, epoch_trainer, load  # noqa: E402

from adaptinf.features import extract as extract_module  # noqa: E402
from adaptinf.features.extract import ExtractConfig, Features, extract_features  # noqa: E402
from adaptinf.model.encoding import Encoder  # noqa: E402
from adaptinf.model.loading import decoder_layers  # noqa: E402
from adaptinf.training import loop as loop_module  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(p)
    return p.parse_args(argv)


@contextlib.contextmanager
def full_forwards():
    """The behaviour before: logits at every position, prune's forward to the end."""
    def full_layer_output(model, layer, inputs):
        return model(**inputs, output_hidden_states=True).hidden_states[layer + 1]
    with mock.patch.object(extract_module, "answer_logits_kwargs", lambda model, labels: {}), \
         mock.patch.object(extract_module, "layer_output", full_layer_output), \
         mock.patch.object(loop_module, "keeps_logits", lambda model: False):
        yield


def _max_diff(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return float(np.abs(a - b).max()) if a is not None and b is not None else 0.0


def _feature_diff(kept: Features, full: Features) -> float:
    diffs = [_max_diff(kept.grads, full.grads), _max_diff(kept.hidden, full.hidden)]
    diffs += [float(np.abs(kept.scores[s] - full.scores[s]).max() / max(1e-12, np.abs(full.scores[s]).max()))
              for s in full.scores]
    return max(diffs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-answer-logits-") as tmp:
        bundle, records = load(args, Path(tmp), device)
        encoder = Encoder(bundle, 2048)
        layer = len(decoder_layers(bundle.model)) // 2
        passes = {
            "extract": ExtractConfig(layers=[layer], projection_dim=args.proj_dim, batch_size=args.batch_size,
                                     seed=args.seed),
            "prune": ExtractConfig(layers=[layer], batch_size=args.batch_size, grads=False, scorers=()),
        }
        answer_tokens = sum(int((torch.tensor(encoder.encode(r).labels) != -100).sum()) for r in records)
        all_tokens = sum(len(encoder.encode(r).input_ids) for r in records)
        result: dict[str, Any] = {"bench": "answer_logits", "model": str(args.model or "tiny demo model"),
                                  "vocab": bundle.model.get_output_embeddings().weight.shape[0],
                                  "layers": len(decoder_layers(bundle.model)), "samples": len(records),
                                  "answer_token_share": round(answer_tokens / all_tokens, 3)}
        run_train = epoch_trainer(bundle, encoder, records, args)

        def run_pass(name: str) -> Features:
            return extract_features(bundle, encoder, records, passes[name], progress=False)

        for name in (*passes, "train"):
            fn = run_train if name == "train" else (lambda name=name: run_pass(name))
            fn()
            with full_forwards():
                fn()                                                     # warm-up both ways
            with full_forwards(), Timer(device) as t_full:
                full = fn()
            with Timer(device) as t_kept:
                kept = fn()
            diff = abs(kept - full) if name == "train" else _feature_diff(kept, full)
            result[name] = {"full_s": round(t_full.seconds, 3), "kept_s": round(t_kept.seconds, 3),
                            "speedup": round(t_full.seconds / t_kept.seconds, 3), "max_diff": float(f"{diff:.3g}")}
        result["machine"] = machine(device)
        return emit(result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # transformers' deprecation notices would bury the JSON line
    main()
