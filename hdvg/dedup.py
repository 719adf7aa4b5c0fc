"""Near-duplicate clips across a whole OUT, from one embedding per clip (its centre keyframe's).

    features  CLIP image embeddings when CLIP weights are configured, else a weight-free perceptual hash
              (`phash`: the signs of the 16x16 lowest DCT frequencies of the 64x64 grey keyframe against
              their median, 256 bits as +-1, so the cosine of two hashes is 1 - 2 * Hamming / 256)
    search    every pair with cosine >= threshold: exact block by block (`exact_pairs`) up to
              `exact_max` clips, else a FAISS inverted-file index of 8-bit quantised vectors with a range
              search (`faiss_pairs`: memory about one byte per dimension per clip plus one block)
    groups    connected components of those pairs (union-find); each keeps one clip by `keeper_order` and
              marks the others `duplicate_of` the kept clip's id
"""
from __future__ import annotations

import io
import math
from typing import Callable, Iterable, Iterator

import numpy as np

PHASH_SIDE, PHASH_BITS_SIDE = 64, 16  # 256-bit hash from a 64x64 DCT (imagehash's phash at hash_size=16)
BLOCK = 4096  # query rows per similarity block: BLOCK x N float32 at a time


def phash(jpeg: bytes) -> np.ndarray:
    """(256,) float32 of +-1: the perceptual hash of an encoded image."""
    import cv2
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32)
    small = cv2.resize(grey, (PHASH_SIDE, PHASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:PHASH_BITS_SIDE, :PHASH_BITS_SIDE].ravel()
    return np.where(low > np.median(low), 1.0, -1.0).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_pairs(vectors: np.ndarray, threshold: float) -> Iterator[tuple[int, int, float]]:
    """(i, j, cosine) with i < j and cosine >= threshold, over unit vectors (N, D), one row block at a time."""
    for start in range(0, len(vectors), BLOCK):
        sims = vectors[start:start + BLOCK] @ vectors.T  # (block, N)
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start
        for r, c in zip(rows[keep], cols[keep]):
            yield int(r + start), int(c), float(sims[r, c])


def faiss_pairs(blocks: Callable[[], Iterable[np.ndarray]], dim: int, count: int, threshold: float,
                nprobe: int = 16) -> Iterator[tuple[int, int, float]]:
    """The same pairs from a FAISS IVF index with 8-bit scalar quantisation (approximate: a pair whose two
    clips fall in lists more than `nprobe` apart is missed; quantisation moves cosines by ~1e-3).
    `blocks()` yields the unit vectors in order, block by block, and is called three times (train, add,
    query), so the whole set is never in memory at once."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"dedup of {count} clips (above score.dedup_exact_max) searches with FAISS, not installed "
                          f"here: pip install 'hdvg[score]' (faiss-cpu), or raise --dedup-exact-max") from exc

    nlist = max(1, min(4 * int(np.sqrt(count)), count // 39))  # FAISS wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    sample, need = [], min(count, 64 * nlist)
    for block in blocks():
        sample.append(block[:need - sum(len(s) for s in sample)].copy())  # not a view of the whole block
        if sum(len(s) for s in sample) >= need:
            break
    index.train(np.ascontiguousarray(np.concatenate(sample)))
    for block in blocks():
        index.add(np.ascontiguousarray(block))
    index.nprobe = min(nprobe, nlist)
    start = 0
    for block in blocks():
        lims, sims, ids = index.range_search(np.ascontiguousarray(block), threshold)
        for r in range(len(block)):
            for s, j in zip(sims[lims[r]:lims[r + 1]], ids[lims[r]:lims[r + 1]]):
                if j > start + r:
                    yield start + r, int(j), float(s)
        start += len(block)


def groups(count: int, pairs: Iterable[tuple[int, int, float]]) -> np.ndarray:
    """(N,) component id of each item (the smallest member's index) under the pairs, by union-find."""
    parent = np.arange(count)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(count)])


def duplicates_of(component: np.ndarray, rank: list[tuple]) -> list[int | None]:
    """Per item, the index of the item its component keeps (None for kept ones and singletons): the
    component keeps its member with the smallest `rank` (see `keeper_order`)."""
    keeper: dict[int, int] = {}
    for i, c in enumerate(component):
        if c not in keeper or rank[i] < rank[keeper[c]]:
            keeper[c] = i
    return [None if keeper[c] == i else keeper[c] for i, c in enumerate(component)]


def keeper_order(clip_id: str, seconds: float, aesthetic: float | None) -> tuple:
    """Sort key of the clip a duplicate group keeps: the highest aesthetic score (a clip without one ranks
    after those with one), then the longest, then the smallest clip id (so the choice is reproducible)."""
    return (-aesthetic if aesthetic is not None else math.inf, -seconds, clip_id)
