"""FVD: the Frechet distance between I3D features of real and generated 16-frame clips (appendix D.3).

`i3d_stats` turns clips into float64 feature statistics; `real_stats` does it once for a shard set and
caches the result with what it was computed from (shard list, clip count, detector hash, resize policy), so
every later evaluation against the same real set only generates and scores its own side.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from model.eval.frames import CLIP_FRAMES, resize_frames
from model.eval.frechet import FeatureStats
from model.eval.i3d import KINETICS_CLASSES, I3DDetector

I3D_SIZE = 224  # I3D's input side
FVD_CLIPS = 2048  # clips a side (StyleGAN-V's protocol): fewer inflate FVD, so reports state the count


def batches(clips: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def i3d_features(detector: I3DDetector, clips: list[np.ndarray], policy: str) -> np.ndarray:
    """(B, 400) features of uint8 (16, H, W, 3) clips, each resized to 224x224 by `policy`."""
    for clip in clips:
        if clip.shape[0] != CLIP_FRAMES:
            raise ValueError(f"FVD scores {CLIP_FRAMES}-frame clips, got {clip.shape[0]} frames")
    x = torch.stack([resize_frames(clip, I3D_SIZE, policy) for clip in clips])  # (B, 16, 224, 224, 3)
    return detector.features(x)


def i3d_stats(detector: I3DDetector, clips: Iterable[np.ndarray], policy: str, batch_size: int = 8
              ) -> FeatureStats:
    """Feature statistics of uint8 (16, H, W, 3) clips."""
    stats = FeatureStats(KINETICS_CLASSES)
    for batch in batches(clips, batch_size):
        stats.add(i3d_features(detector, batch, policy))
    return stats


def real_stats_key(shards: list[str], count: int, detector_sha256: str, policy: str) -> dict[str, str]:
    """What real statistics depend on: it names the cache file and is stored inside it."""
    return {"shards": json.dumps(shards), "count": str(count), "detector_sha256": detector_sha256,
            "resize": policy, "frames": f"central {CLIP_FRAMES}"}


def real_stats(shards: list[str], clips: Iterable[np.ndarray], detector: I3DDetector, detector_sha256: str,
               policy: str, count: int, cache_dir: Path, batch_size: int = 8,
               short_clips: list[str] | None = None) -> tuple[FeatureStats, dict]:
    """Statistics of the first `count` real clips (central 16 frames each), from `cache_dir` when they were
    computed before from the same shards, count, detector and policy. `short_clips` is the list the `clips`
    iterator fills with the ids of clips it left out as shorter than 16 frames. Returns (stats, provenance);
    the provenance says whether the cache served, how many clips there really were and how many short ones
    were left out before the count was reached (`short_clips_left_out`, stored in the cache too)."""
    key = real_stats_key(shards, count, detector_sha256, policy)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"real_{name}.npz"
    if path.is_file():
        stats, meta = FeatureStats.load(path)
        meta["short_clips_left_out"] = int(meta.get("short_clips_left_out", 0))
        return stats, {**meta, "cache": str(path), "cached": True}
    stats = i3d_stats(detector, itertools.islice(clips, count), policy, batch_size)
    short = len(short_clips or [])
    stats.save(path, **key, clips=str(stats.count), short_clips_left_out=str(short))
    return stats, {**key, "clips": str(stats.count), "short_clips_left_out": short, "cache": str(path),
                   "cached": False}
