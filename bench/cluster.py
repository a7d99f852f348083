"""The pseudo-task k-sweep (k = 5..50, elbow of WSS) and the in-cluster selection, vs the same
sweep done with scikit-learn's MiniBatchKMeans (what the paper's code used, batch 10240).

Data: random-but-clustered unit vectors (like projected gradients): `--true-k` Gaussian blobs
of different sizes and spreads around random centres, rows L2-normalised. For each size the
sweep runs through `adaptinf.clustering.choose_k` (faiss), then Adapt-∞'s selection inside the
clusters (budget split, entropy-chosen scorer, CCS) through the `adapt-inf` strategy, timed
apart; scikit-learn runs MiniBatchKMeans for every k and the same elbow rule. Reported: the
times, `speedup` (sklearn sweep / adaptinf sweep; the minimum over sizes), the k each chose,
their WSS at the true k and adjusted Rand index against the true blobs (equal quality check).

    python bench/cluster.py --threads 1            # 100k×256 and 20k×1024
    python bench/cluster.py --quick                # 20k×256 and 5k×1024
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_threads, emit, machine  # noqa: E402

import torch  # noqa: E402  (only for machine())

from adaptinf import clustering  # noqa: E402
from adaptinf.selection import PoolFeatures, SelectionContext, get_strategy  # noqa: E402
from adaptinf.selection import adapt_inf as adapt_inf_module  # noqa: E402

SIZES = {"default": [(100_000, 256), (20_000, 1024)], "quick": [(20_000, 256), (5_000, 1024)]}
SCORERS = ("perplexity", "image-grounding", "el2n", "entropy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20k×256 and 5k×1024 instead of 100k×256 and 20k×1024")
    p.add_argument("--sizes", default=None, help="override, e.g. '3000x64,1000x128'")
    p.add_argument("--k-min", type=int, default=5)
    p.add_argument("--k-max", type=int, default=50)
    p.add_argument("--true-k", type=int, default=20, help="blobs in the synthetic data")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for faiss and scikit-learn alike")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sklearn", action="store_true", help="skip the (slow) scikit-learn sweep")
    args = p.parse_args(argv)
    if args.sizes:
        args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    else:
        args.shapes = SIZES["quick" if args.quick else "default"]
    return args


def clustered_vectors(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) unit rows from k blobs of uneven size and spread; and the blob of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = rng.dirichlet(np.full(k, 2.0))
    truth = rng.choice(k, size=n, p=sizes)
    spread = rng.uniform(0.5, 1.5, size=k).astype(np.float32) / np.sqrt(d)
    x = centres[truth] + rng.normal(size=(n, d)).astype(np.float32) * spread[truth, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), truth


def random_scores(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {"perplexity": np.exp(rng.normal(1.0, 0.5, n)), "image-grounding": rng.lognormal(0.0, 0.2, n),
            "el2n": rng.uniform(0.0, 1.4, n), "entropy": rng.gamma(2.0, 0.5, n)}


def sklearn_sweep(x: np.ndarray, k_min: int, k_max: int, seed: int) -> tuple[int, dict[int, float], dict[int, np.ndarray]]:
    from sklearn.cluster import MiniBatchKMeans
    lo, hi = clustering.k_range(len(x), k_min, k_max)
    wss: dict[int, float] = {}
    labels: dict[int, np.ndarray] = {}
    for k in range(lo, hi + 1):
        km = MiniBatchKMeans(n_clusters=k, batch_size=10240, random_state=seed).fit(x)
        wss[k] = float(km.inertia_)  # over all points, after fitting
        labels[k] = km.labels_
    return clustering.elbow_k(list(wss), list(wss.values())), wss, labels


def run_size(n: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score
    x, truth = clustered_vectors(n, d, args.true_k, args.seed)
    t0 = time.perf_counter()
    result = clustering.choose_k(x, args.k_min, args.k_max, seed=args.seed)
    sweep_s = time.perf_counter() - t0

    feats = PoolFeatures(uids=[f"d/{i}" for i in range(n)], datasets=["d"] * n, is_new=np.ones(n, bool),
                         grads=x, scores=random_scores(n, args.seed))
    ctx = SelectionContext(budget=n // 4, seed=args.seed, k_min=args.k_min, k_max=args.k_max, scorers=SCORERS)
    original = adapt_inf_module.choose_k
    adapt_inf_module.choose_k = lambda *a, **kw: result  # time the selection alone, on this clustering
    try:
        t0 = time.perf_counter()
        selection = get_strategy("adapt-inf").select(feats, ctx)
        select_s = time.perf_counter() - t0
    finally:
        adapt_inf_module.choose_k = original
    row: dict[str, Any] = {
        "n": n, "d": d, "true_k": args.true_k,
        "adaptinf_sweep_s": round(sweep_s, 3), "adaptinf_select_s": round(select_s, 3),
        "selected": int(selection.indices.size), "budget": ctx.budget,
        "k_adaptinf": result.k, "ari_adaptinf": round(float(adjusted_rand_score(truth, result.labels)), 4),
    }
    if not args.no_sklearn:
        t0 = time.perf_counter()
        k_sk, wss_sk, labels_sk = sklearn_sweep(x, args.k_min, args.k_max, args.seed)
        sk_s = time.perf_counter() - t0
        common = args.true_k if args.true_k in wss_sk and args.true_k in result.wss_by_k else result.k
        row.update({
            "sklearn_sweep_s": round(sk_s, 3), "speedup": round(sk_s / sweep_s, 2), "k_sklearn": k_sk,
            "ari_sklearn": round(float(adjusted_rand_score(truth, labels_sk[k_sk])), 4),
            # < 1: faiss's k-means found tighter clusters than MiniBatchKMeans at the same k.
            "wss_ratio_at_true_k": round(result.wss_by_k[common] / wss_sk[common], 4),
        })
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with cpu_threads(args.threads):
        rows = [run_size(n, d, args) for n, d in args.shapes]
    result: dict[str, Any] = {"bench": "cluster", **machine(torch.device("cpu")), "threads": args.threads,
                              "k_range": [args.k_min, args.k_max], "sizes": rows}
    if not args.no_sklearn:
        result["speedup"] = min(r["speedup"] for r in rows)
    result["sweep_plus_select_s"] = round(sum(r["adaptinf_sweep_s"] + r["adaptinf_select_s"] for r in rows), 3)
    return emit(result)


if __name__ == "__main__":
    main()
