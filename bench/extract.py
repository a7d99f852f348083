"""Fused feature extraction vs the public code's way, on the same model and data in one run.

Fused (`adaptinf.features.extract.extract_features`): batches, ONE forward per batch giving
logits (perplexity, EL2N, entropy) and hidden states, one backward that stops at the chosen
layer with per-sample LoRA gradients from hooks, projection per batch, plus one image-free
forward for image grounding.

Reference (`adaptinf.features.reference.reference_extract`): what the Adapt-∞/LESS code did —
batch size 1, every layer's LoRA trainable, a full backward through all layers per sample,
`.grad` of the chosen layer, projected 16 samples at a time; the same scores and hidden states.

Reports samples/s of both, the speedup, the largest difference of the projected gradients
(and scores, hidden states), achieved FLOP/s (counted with torch's FlopCounterMode on one
batch), and peak memory at two pool sizes: the fused pass holds one batch at a time, so peak
memory should grow only by the outputs (pool × (projection + hidden) floats).

    python bench/extract.py --threads 1                                  # CPU defaults
    python bench/extract.py --device cuda --dtype bf16 --hidden 1024 --layers 24 \
        --vision-hidden 1024 --vision-layers 24 --image-size 336 --patch 14 --pool 512,1024
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, Timer, emit, machine, mb, pick_device, set_threads  # noqa: E402

from adaptinf.data.demo import write_demo_stream  # noqa: E402
from adaptinf.data.records import Record, read_records  # noqa: E402
from adaptinf.features.extract import ExtractConfig, Features, extract_features  # noqa: E402
from adaptinf.features.reference import reference_extract  # noqa: E402
from adaptinf.model.encoding import Encoder  # noqa: E402
from adaptinf.model.loading import ModelBundle, attach_adapter, decoder_layers, load_base  # noqa: E402
from adaptinf.model.tiny import build_tiny_model  # noqa: E402
from adaptinf.spec import LoraSpec  # noqa: E402

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 on a GPU, fp32 on CPU (projection always accumulates in fp32)")
    p.add_argument("--hidden", type=int, default=128, help="language model hidden size")
    p.add_argument("--layers", type=int, default=4, help="language model decoder layers")
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (every linear of the language model)")
    p.add_argument("--pool", default="256,512", help="two pool sizes, comma-separated, for the memory check")
    p.add_argument("--ref-samples", type=int, default=64, help="samples the (slow) reference mode runs on")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the model and data go (default: a temp dir)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    args = p.parse_args(argv)
    args.pools = sorted(int(v) for v in args.pool.split(","))
    return args


def build(args: argparse.Namespace, work: Path, device: torch.device) -> tuple[ModelBundle, list[Record], str]:
    model_dir = build_tiny_model(work / "model", hidden=args.hidden, layers=args.layers,
                                 vision_hidden=args.vision_hidden, vision_layers=args.vision_layers,
                                 image_size=args.image_size, patch=args.patch, seed=args.seed)
    dtype = DTYPES.get(args.dtype, "float32" if device.type == "cpu" else "bfloat16")
    bundle = load_base(str(model_dir), dtype, device)
    bundle = attach_adapter(bundle, LoraSpec(rank=args.rank), None, trainable=False, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:  # peft starts B at 0 (all A-gradients 0): make it look trained
                p.copy_((0.05 * torch.randn(p.shape, generator=g)).to(p.dtype))
    need = max(args.pools)
    info = write_demo_stream(work / "stream", seed=args.seed, size="quick" if need <= 300 else "default")
    records: list[Record] = []
    for ds in info["datasets"]:
        recs, _ = read_records(ds["path"], ds["name"], image_root=info["root"])
        records += recs
    order = np.random.default_rng(args.seed).permutation(len(records))  # mixed image/text batches
    records = [records[i] for i in order]
    records = (records * (need // len(records) + 1))[:need]
    return bundle, records, dtype


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def compare(fused: Features, ref: Features) -> dict[str, float]:
    n = len(ref.grads)
    out = {"max_abs_diff": float(np.abs(fused.grads[:n] - ref.grads).max()),
           "hidden_max_rel_diff": float(np.abs(fused.hidden[:n] - ref.hidden).max() / np.abs(ref.hidden).max()),
           "min_cosine": float((fused.grads[:n] * ref.grads).sum(1).min())}
    for name, values in ref.scores.items():
        rel = np.abs(fused.scores[name][:n] - values) / np.maximum(np.abs(values), 1e-12)
        out[f"{name}_max_rel_diff"] = float(rel.max())
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    if device.type == "cuda":
        # fp32 means fp32 (TF32 matmuls/convolutions would make "equal results" ~1e-4 apart).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(args.workdir or tmp)
        bundle, records, dtype = build(args, work, device)
        encoder = Encoder(bundle, args.max_length)
        n_layers = len(decoder_layers(bundle.model))
        cfg = ExtractConfig(layers=[n_layers // 2], projection_dim=args.proj_dim, batch_size=args.batch_size,
                            seed=args.seed)
        n_ref = min(args.ref_samples, args.pools[0])
        # Warm-up over the very samples timed next: on a GPU every new sequence length costs
        # kernel selection once (cuDNN attention builds a plan per shape), which would otherwise
        # be charged to whichever mode meets a length first. Steady state is what is compared.
        extract_features(bundle, encoder, records[:args.pools[0]], cfg, progress=False)
        reference_extract(bundle, encoder, records[:n_ref], cfg)

        flops: dict[str, float] = {}
        if not args.no_flops:
            # Several batches (their padding is part of the work), and a sample of the reference.
            n = min(4 * args.batch_size, args.pools[0])
            flops["fused"] = count_flops(lambda: extract_features(bundle, encoder, records[:n], cfg, progress=False)) / n
            k = min(8, n_ref)
            flops["reference"] = count_flops(lambda: reference_extract(bundle, encoder, records[:k], cfg)) / k

        with PeakMemory(device) as ref_mem, Timer(device) as ref_time:
            ref = reference_extract(bundle, encoder, records[:n_ref], cfg)
        runs = []
        fused = None
        for n in args.pools:
            with PeakMemory(device) as mem, Timer(device) as timer:
                fused = extract_features(bundle, encoder, records[:n], cfg, progress=False)
            outputs = fused.grads.nbytes + fused.hidden.nbytes + sum(v.nbytes for v in fused.scores.values())
            runs.append({"pool": n, "seconds": round(timer.seconds, 3),
                         "samples_per_s": round(n / timer.seconds, 2),
                         "peak_mem_mb": mb(mem.peak_bytes), "outputs_mb": mb(outputs)})
        assert fused is not None

    fused_sps = runs[-1]["samples_per_s"]
    ref_sps = n_ref / ref_time.seconds
    params = sum(p.numel() for p in bundle.model.parameters())
    result: dict[str, Any] = {
        "bench": "extract",
        **machine(device),
        "dtype": dtype,
        "params_m": round(params / 1e6, 2),
        "layers": n_layers, "chosen_layer": cfg.layers[0], "grad_dim": fused.grad_dim,
        "proj_dim": int(fused.grads.shape[1]), "batch_size": args.batch_size,
        "fused_samples_per_s": fused_sps,
        "reference_samples_per_s": round(ref_sps, 2),
        "reference_samples": n_ref,
        "speedup": round(fused_sps / ref_sps, 2),
        **{k: (round(v, 9) if abs(v) < 1 else round(v, 6)) for k, v in compare(fused, ref).items()},
        "memory": runs,
        "reference_peak_mem_mb": mb(ref_mem.peak_bytes),
        "mem_growth_mb": round(runs[-1]["peak_mem_mb"] - runs[0]["peak_mem_mb"], 2),
        "outputs_growth_mb": round(runs[-1]["outputs_mb"] - runs[0]["outputs_mb"], 2),
    }
    if flops:
        result.update({
            "gflop_per_sample_fused": round(flops["fused"] / 1e9, 4),
            "gflop_per_sample_reference": round(flops["reference"] / 1e9, 4),
            "fused_tflops": round(flops["fused"] * fused_sps / 1e12, 4),
            "reference_tflops": round(flops["reference"] * ref_sps / 1e12, 4),
        })
    return emit(result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # transformers' deprecation notices would bury the JSON line
    main()
