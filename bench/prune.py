"""Lite-Adapt-∞ permanent pruning: cluster-wise redundancy removal on 100k hidden-state vectors.

`adaptinf.prune.prune_pool` cuts the pool to the budget D, largest clusters first, removing
inside each cluster the sample most similar (cosine) to another kept one, again and again. The
data are clustered random vectors with a share of near-duplicates (what a real pool has);
cluster labels are given, as the prune stage gets them from cluster-select.

    python bench/prune.py --threads 1              # 100k × 256, cut to half
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

from adaptinf.prune import prune_pool  # noqa: E402


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    x, labels = pool_vectors(args.n, args.dim, args.clusters, args.duplicates, args.seed)
    target = int(round(args.keep * args.n))
    with cpu_threads(args.threads):
        t0 = time.perf_counter()
        result = prune_pool(x, labels, target, neighbours=args.neighbours)
        seconds = time.perf_counter() - t0
    sizes_before = np.bincount(labels, minlength=args.clusters)
    sizes_after = np.bincount(labels[result.keep], minlength=args.clusters)
    sims = np.array([s for _, _, s, _ in result.removed if s is not None])
    return emit({
        "bench": "prune", **machine(torch.device("cpu")), "threads": args.threads,
        "n": args.n, "dim": args.dim, "clusters": args.clusters, "target": target, "neighbours": args.neighbours,
        "kept": int(result.keep.size), "removed": len(result.removed),
        "seconds": round(seconds, 3), "removed_per_s": round(len(result.removed) / seconds, 1),
        "largest_cluster_before": int(sizes_before.max()), "largest_cluster_after": int(sizes_after.max()),
        "smallest_cluster_after": int(sizes_after[sizes_before > 0].min()),
        "removed_max_sim_mean": round(float(sims.mean()), 4) if sims.size else None,
        # The removed indices in removal order: equal digests across code versions mean the
        # same removals (how a speed-up is checked to change nothing).
        "removed_sha256": hashlib.sha256(np.array([i for i, _, _, _ in result.removed], dtype=np.int64)
                                         .tobytes()).hexdigest()[:16],
    })


if __name__ == "__main__":
    main()
