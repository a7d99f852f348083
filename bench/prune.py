"""Lite-Adapt-∞ permanent pruning: cluster-wise redundancy removal on 100k hidden-state vectors.

`adaptinf.prune.prune_pool` cuts the pool to the budget D, largest clusters first, removing
inside each cluster the sample most similar (cosine) to another kept one, again and again. The
data are clustered random vectors with a share of near-duplicates (what a real pool has);
cluster labels are given, as the prune stage gets them from cluster-select. The previous
implementation (`prune_reference.py`) runs on the same pool in the same process: `speedup` is
its time over the current one's, `same_removals` whether both removed the same samples in the
same order.

    python bench/prune.py --threads 1              # 100k × 256, cut to half
    python bench/prune.py --threads 1 --skip-reference   # the current implementation only
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_threads, emit, machine  # noqa: E402

import torch  # noqa: E402  (only for machine())

from adaptinf.prune import PruneResult, prune_pool  # noqa: E402
from prune_reference import prune_reference  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="pool size")
    p.add_argument("--dim", type=int, default=256, help="hidden-state dimension")
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--keep", type=float, default=0.5, help="budget D as a share of the pool")
    p.add_argument("--duplicates", type=float, default=0.1, help="share of rows that are near-copies of others")
    p.add_argument("--neighbours", type=int, default=32, help="candidate list length per sample")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for faiss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true", help="do not time the previous implementation")
    return p.parse_args(argv)


def pool_vectors(n: int, d: int, k: int, duplicates: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered hidden states (uneven cluster sizes) with near-duplicates; and the labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    labels = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 1.5)))
    x = centres[labels] + 0.7 * rng.normal(size=(n, d)).astype(np.float32)
    dup = rng.choice(n, size=int(duplicates * n), replace=False)
    src = rng.integers(0, n, size=dup.size)
    x[dup] = x[src] + 1e-2 * rng.normal(size=(dup.size, d)).astype(np.float32)
    labels[dup] = labels[src]
    return x, labels


def _digest(result: PruneResult) -> str:
    """The removed indices in removal order, hashed: equal digests mean the same removals."""
    order = np.array([i for i, _, _, _ in result.removed], dtype=np.int64)
    return hashlib.sha256(order.tobytes()).hexdigest()[:16]


def _timed(prune: Any, x: np.ndarray, labels: np.ndarray, target: int,
           neighbours: int) -> tuple[PruneResult, float, float]:
    """The result, wall seconds and CPU seconds (steadier than wall on a shared machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = prune(x, labels, target, neighbours=neighbours)
    return result, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    x, labels = pool_vectors(args.n, args.dim, args.clusters, args.duplicates, args.seed)
    target = int(round(args.keep * args.n))
    with cpu_threads(args.threads):
        result, seconds, cpu = _timed(prune_pool, x, labels, target, args.neighbours)
        reference = None if args.skip_reference else _timed(prune_reference, x, labels, target, args.neighbours)
    sizes_before = np.bincount(labels, minlength=args.clusters)
    sizes_after = np.bincount(labels[result.keep], minlength=args.clusters)
    sims = np.array([s for _, _, s, _ in result.removed if s is not None])
    compared: dict[str, Any] = {}
    if reference is not None:
        ref, ref_seconds, ref_cpu = reference
        compared = {"reference_seconds": round(ref_seconds, 3), "reference_cpu_seconds": round(ref_cpu, 3),
                    "speedup": round(ref_seconds / seconds, 2), "cpu_speedup": round(ref_cpu / cpu, 2),
                    "same_removals": [r[0] for r in ref.removed] == [r[0] for r in result.removed],
                    "same_removed_set": set(ref.keep.tolist()) == set(result.keep.tolist()),
                    "reference_removed_sha256": _digest(ref)}
    return emit({
        "bench": "prune", **machine(torch.device("cpu")), "threads": args.threads,
        "n": args.n, "dim": args.dim, "clusters": args.clusters, "target": target, "neighbours": args.neighbours,
        "kept": int(result.keep.size), "removed": len(result.removed),
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "removed_per_s": round(len(result.removed) / seconds, 1), **compared,
        "largest_cluster_before": int(sizes_before.max()), "largest_cluster_after": int(sizes_after.max()),
        "smallest_cluster_after": int(sizes_after[sizes_before > 0].min()),
        "removed_max_sim_mean": round(float(sims.mean()), 4) if sims.size else None,
        "removed_sha256": _digest(result),
    })


if __name__ == "__main__":
    main()
