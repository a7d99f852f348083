"""What the cheaper gradient sources cost, on the same pool in one process: the fused extract
pass with backpropagated gradients, with zero-order (forward-only) estimates, and with a
smaller proxy model (backprop on the proxy).

Reports per source wall seconds, CPU seconds of this process (robust to other jobs on a
shared machine), samples/s and peak memory; for zero-order, how well the pairwise cosines of
its features follow backprop's (Pearson r over all pairs), which is what clustering uses.
Both models are the demo's tiny shapes (main: LM 128 × 2 layers, CLIP 64 × 2; proxy: LM 64 × 2,
CLIP 32 × 1) with random non-zero LoRA B, as after training; costs do not depend on the weights.

    python bench/gradient_sources.py --threads 1               # CPU, pool 256
    python bench/gradient_sources.py --device cuda --pool 2048  # GPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, machine, mb, pick_device, set_threads  # noqa: E402

from adaptinf.data.demo import write_demo_stream  # noqa: E402
from adaptinf.data.records import Record, read_records  # noqa: E402
from adaptinf.features.extract import ExtractConfig, Features, extract_features  # noqa: E402
from adaptinf.model.encoding import Encoder  # noqa: E402
from adaptinf.model.loading import ModelBundle, attach_adapter, decoder_layers, load_base  # noqa: E402
from adaptinf.model.tiny import build_tiny_model  # noqa: E402
from adaptinf.runner.proxy import PROXY_SHAPE  # noqa: E402
from adaptinf.spec import LoraSpec  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--pool", type=int, default=256, help="samples extracted per source")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--directions", type=int, default=16, help="zero-order perturbation directions K")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", help="an existing demo stream folder to take records from (default: write one)")
    return p.parse_args(argv)


def _bundle(path: Path, device: torch.device, seed: int) -> ModelBundle:
    bundle = attach_adapter(load_base(str(path), "auto", device), LoraSpec(), None, trainable=False, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:  # peft starts B at 0: make it look trained
                p.copy_((0.05 * torch.randn(p.shape, generator=g)).to(p.dtype))
    return bundle


def _records(work: Path, n: int, seed: int, stream: str | None) -> list[Record]:
    if stream is None:
        stream = write_demo_stream(work / "stream", seed=seed, size="quick" if n <= 300 else "default")["root"]
    records: list[Record] = []
    for path in sorted(Path(stream).glob("datasets/*.jsonl")):
        records += read_records(str(path), path.stem, image_root=str(stream))[0]
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order][:n]


def _timed(bundle: ModelBundle, records: list[Record], cfg: ExtractConfig, device: torch.device) -> tuple[Features, dict]:
    encoder = Encoder(bundle, 512)
    extract_features(bundle, encoder, records[:cfg.batch_size], cfg, progress=False)   # warm-up
    with PeakMemory(device) as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        feats = extract_features(bundle, encoder, records, cfg, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return feats, {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "samples_per_s": round(len(records) / wall, 1),
                   "peak_mb": round(mb(mem.peak_bytes), 1), "grad_dim": feats.grad_dim}


def _cosine_agreement(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices(len(a), 1)
    return float(np.corrcoef((a @ a.T)[iu], (b @ b.T)[iu])[0, 1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-gradsrc-") as tmp:
        work = Path(tmp)
        main_dir = build_tiny_model(work / "model", seed=args.seed)
        proxy_dir = build_tiny_model(work / "proxy", seed=args.seed, **PROXY_SHAPE)
        records = _records(work, args.pool, args.seed, args.stream)
        model = _bundle(main_dir, device, args.seed)
        layers = [len(decoder_layers(model.model)) // 2]
        base = dict(layers=layers, projection_dim=args.proj_dim, batch_size=args.batch_size, seed=args.seed)
        bp, result_bp = _timed(model, records, ExtractConfig(**base), device)
        zo, result_zo = _timed(model, records, ExtractConfig(**base, gradient_source="zero-order",
                                                             zo_directions=args.directions), device)
        proxy = _bundle(proxy_dir, device, args.seed)
        # The proxy is shallower: its own middle layer, not the main model's index.
        proxy_layers = [len(decoder_layers(proxy.model)) // 2]
        _, result_px = _timed(proxy, records, ExtractConfig(**{**base, "layers": proxy_layers}), device)
    result_zo["cosine_agreement_with_backprop"] = round(_cosine_agreement(bp.grads, zo.grads), 4)
    result = {"bench": "gradient_sources", "pool": len(records), "directions": args.directions,
              "backprop": result_bp, "zero_order": result_zo, "proxy": result_px,
              "zero_order_cpu_ratio": round(result_zo["cpu_s"] / result_bp["cpu_s"], 2),
              "proxy_cpu_ratio": round(result_px["cpu_s"] / result_bp["cpu_s"], 2),
              "machine": machine(device)}
    return emit(result)


if __name__ == "__main__":
    main()
