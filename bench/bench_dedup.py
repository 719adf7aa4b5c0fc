"""Near-duplicate search over N synthetic embeddings: wall time, peak memory and recall of the FAISS path
`hdvg score --scorers dedup` takes above `dedup_exact_max` clips, against, in the same run, the exact block
search (`hdvg.dedup.exact_pairs`) over the first --exact-n of them, scaled by N^2.

    .venv/bin/python bench/bench_dedup.py [--n 1000000] [--dim 256] [--planted 1000] [--exact-n 50000]

Embeddings are random unit vectors (no two closer than ~0.3 in cosine at dim 256) plus --planted near-copies
(cosine ~0.99) of random earlier ones, made block by block from a seed so the set is never whole in memory,
as a real OUT's per-shard feature files are read. --dim 256 is the phash (no CLIP weights); 768 is ViT-L/14.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "dedup.json"

from hdvg.dedup import BLOCK, exact_pairs, faiss_pairs, unit  # noqa: E402


def synthetic(n: int, dim: int, planted: int, seed: int = 0):
    """blocks() over n unit vectors whose last `planted` are near-copies of the first `planted`; and the planted
    pairs."""
    originals = np.random.default_rng(seed).choice(n - planted, planted, replace=False)

    def raw(start: int) -> np.ndarray:
        return np.random.default_rng([seed, start]).normal(size=(min(n, start + BLOCK) - start, dim)).astype(np.float32)

    copies = unit(np.stack([raw(o - o % BLOCK)[o % BLOCK].copy() for o in originals]))  # (planted, dim)
    noise = np.random.default_rng([seed, 1]).normal(size=(planted, dim)).astype(np.float32)
    copies = unit(copies + 0.1 * unit(noise))  # cosine ~0.995 to their originals

    def blocks():
        for start in range(0, n, BLOCK):
            x = unit(raw(start))
            first = max(start, n - planted)  # row i >= n - planted is a copy of originals[i - (n - planted)]
            if first < start + len(x):
                x[first - start:] = copies[first - (n - planted):start + len(x) - (n - planted)]
            yield x

    return blocks, {(int(o), n - planted + i) for i, o in enumerate(originals)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--planted", type=int, default=1000)
    ap.add_argument("--exact-n", type=int, default=50_000)
    ap.add_argument("--threshold", type=float, default=0.95)
    args = ap.parse_args()

    rss_start = peak_rss_mb()
    blocks, truth = synthetic(args.n, args.dim, args.planted)
    started = time.perf_counter()
    found = {(i, j) for i, j, _ in faiss_pairs(blocks, args.dim, args.n, args.threshold)}
    faiss_s = time.perf_counter() - started
    rss_faiss = peak_rss_mb()  # the peak so far is FAISS's: the exact search runs after it

    small, small_truth = synthetic(args.exact_n, args.dim, args.planted // 10, seed=1)
    vectors = np.concatenate(list(small()))
    started = time.perf_counter()
    exact = {(i, j) for i, j, _ in exact_pairs(vectors, args.threshold)}
    exact_s = time.perf_counter() - started
    assert exact == small_truth, "the exact search must find exactly the planted pairs"
    result = {
        "n": args.n, "dim": args.dim, "threshold": args.threshold, "planted_pairs": len(truth),
        "faiss_s": round(faiss_s, 1), "faiss_recall": round(len(found & truth) / len(truth), 4),
        "faiss_false_pairs": len(found - truth), "peak_rss_mb_faiss": round(rss_faiss, 1),
        "peak_rss_mb_at_start": round(rss_start, 1), "peak_rss_mb_exact": round(peak_rss_mb(), 1),
        "index_bytes_per_vector": args.dim,
        "exact_n": args.exact_n, "exact_s": round(exact_s, 2),
        "exact_s_scaled_to_n": round(exact_s * (args.n / args.exact_n) ** 2, 1),
    }
    result["faiss_speedup_vs_exact"] = round(result["exact_s_scaled_to_n"] / faiss_s, 1)
    results = RESULTS if args.n == 1_000_000 else RESULTS.with_name(f"dedup_n{args.n}.json")  # keep the 1M run
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
