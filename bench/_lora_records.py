"""What the benches on a real model and real records share: their arguments, the model with a
fresh LoRA adapter and a sample of the records (the demo stream's tiny model and records by
default), and one LoRA training epoch that starts from the same adapter every time."""
from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch

from adaptinf.data.demo import write_demo_stream
from adaptinf.data.records import Record, read_records
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, attach_adapter, load_base
from adaptinf.model.tiny import build_tiny_model
from adaptinf.spec import LoraSpec
from adaptinf.training.loop import TrainConfig, train_model


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a model folder (default: the demo stream's tiny model)")
    p.add_argument("--records", default=None, help="a folder of .jsonl datasets (default: the demo stream)")
    p.add_argument("--samples", type=int, default=64, help="records each pass runs on")
    p.add_argument("--batch-size", type=int, default=16, help="extract and prune batch size")
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)


def load(args: argparse.Namespace, work: Path, device: torch.device) -> tuple[ModelBundle, list[Record]]:
    model_dir, records_dir = args.model, args.records
    if model_dir is None or records_dir is None:
        info = write_demo_stream(work / "stream", seed=args.seed, size="quick")
        model_dir = model_dir or build_tiny_model(work / "model", seed=args.seed)
        records_dir = records_dir or str(Path(info["datasets"][0]["path"]).parent)
    records: list[Record] = []
    for path in sorted(Path(records_dir).glob("*.jsonl")):
        got, _ = read_records(str(path), path.stem, image_root=str(Path(records_dir).parent))
        records += got
    if not records:
        raise SystemExit(f"no records in {records_dir}")
    order = np.random.default_rng(args.seed).permutation(len(records))
    records = [records[i] for i in order[:args.samples]]
    bundle = load_base(str(model_dir), "float32", device)
    return attach_adapter(bundle, LoraSpec(rank=args.rank), None, trainable=True, seed=args.seed), records


def epoch_trainer(bundle: ModelBundle, encoder: Encoder, records: list[Record],
                  args: argparse.Namespace) -> Callable[[], float]:
    """One LoRA epoch over `records` from the adapter as it is now, each call; its final loss."""
    state = {k: v.detach().clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}

    def train() -> float:
        bundle.model.load_state_dict(state, strict=False)   # the same start every time
        for n, p in bundle.model.named_parameters():
            p.requires_grad_("lora_" in n)
        res = train_model(bundle, encoder, records, TrainConfig(epochs=1, batch_size=args.train_batch_size,
                                                                seed=args.seed), progress=False)
        return res.final_loss
    return train
