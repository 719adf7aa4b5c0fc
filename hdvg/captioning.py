"""`caption`: the pluggable captioner interface over batches of keyframes.

A captioner is two callables, so the GPU never waits for decoding:

    preprocessor (CPU)  list of JPEG keyframes -> a batch (for BLIP-2, float32 pixels (N, 3, H, W))
    captioner    (GPU)  batch -> one caption (or None) per keyframe, in order

`resolve_captioner` runs once on the driver before any work: it checks the weights, pins their revision
and names the captioner as every clip's json records it (`captioner`), e.g.
`blip2:Salesforce/blip2-opt-2.7b@<commit>`. Both callables are built from that spec, once per Ray
task process / actor, so weights load once per actor. `caption` is the plain direct path.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from hdvg.config import CaptionConfig


class Captioner(Protocol):
    name: str  # recorded per clip

    def __call__(self, batch: Any) -> list[str | None]: ...


Preprocessor = Callable[[list[bytes]], Any]


@dataclass(frozen=True)
class CaptionerSpec:
    """What the driver resolved at start-up; picklable, sent to preprocess tasks and caption actors."""

    cfg: CaptionConfig
    name: str                   # the per-clip `captioner` value
    weights: Any = None         # hdvg.blip2.Weights for a model, None for 'none'
    uncaptioned_reason: str | None = None  # set when the run goes on uncaptioned (weights missing)

    @property
    def runs_model(self) -> bool:
        return self.weights is not None


def resolve_captioner(cfg: CaptionConfig) -> CaptionerSpec:
    """Check that the captioner can run before any work starts. Raises `hdvg.blip2.WeightsMissing`
    unless `cfg.on_missing_weights` is 'uncaptioned'."""
    if cfg.name == "none":
        return CaptionerSpec(cfg, "none")
    from hdvg.blip2 import WeightsMissing, resolve_weights

    try:
        weights = resolve_weights(cfg)
    except WeightsMissing as exc:
        if cfg.on_missing_weights == "fail":
            raise
        return CaptionerSpec(cfg, f"none:weights-missing:{cfg.name}:{cfg.model}",
                             uncaptioned_reason=str(exc).split("\n")[1].strip())
    return CaptionerSpec(cfg, f"{cfg.name}:{cfg.model}@{weights.revision}", weights)


class NoCaptioner:
    """Leaves captions empty: the clip json says `caption: null` and `txt` is empty."""

    def __init__(self, name: str = "none"):
        self.name = name

    def __call__(self, batch: Any) -> list[str | None]:
        return [None] * len(batch)


def build_captioner(spec: CaptionerSpec) -> Captioner:
    if not spec.runs_model:
        return NoCaptioner(spec.name)
    from hdvg.blip2 import Blip2Captioner

    return Blip2Captioner.load(spec.cfg, spec.weights, spec.name)


def build_preprocessor(spec: CaptionerSpec) -> Preprocessor:
    return _model_preprocessor(spec.weights) if spec.runs_model else list


@lru_cache(maxsize=4)  # a Ray worker process runs many preprocess tasks: load the image processor once
def _model_preprocessor(weights) -> Preprocessor:
    from hdvg.blip2 import KeyframePreprocessor

    return KeyframePreprocessor(weights)


def caption(captioner: Captioner, preprocess: Preprocessor, keyframes: list[bytes],
            batch_size: int) -> list[str | None]:
    """Caption `keyframes` in batches of `batch_size`; one caption (or None) per keyframe, in order."""
    out: list[str | None] = []
    for i in range(0, len(keyframes), batch_size):
        out += checked(captioner, preprocess(keyframes[i:i + batch_size]))
    return out


def checked(captioner: Captioner, batch: Any) -> list[str | None]:
    got = captioner(batch)
    if len(got) != len(batch):
        raise RuntimeError(f"captioner {captioner.name} returned {len(got)} captions for {len(batch)} images")
    return got


def caption_groups(captioner: Captioner, groups: list[np.ndarray], batch_size: int) -> list[list[str | None]]:
    """Caption preprocessed batches of several videos together (full GPU batches across videos) and
    give each video its own captions back, in order."""
    sizes = [len(g) for g in groups]
    if not any(sizes):
        return [[] for _ in groups]
    joined = np.concatenate([g for g in groups if len(g)])
    flat: list[str | None] = []
    for i in range(0, len(joined), batch_size):
        flat += checked(captioner, joined[i:i + batch_size])
    bounds = np.cumsum([0, *sizes])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def caption_stream(captioner: Captioner, preprocess: Preprocessor,
                   batches: Iterable[list[bytes]], prefetch: int = 2) -> Iterator[list[str | None]]:
    """Caption an iterable of keyframe batches in one process, decoding the next `prefetch` batches on
    CPU threads while the model works on the current one (the re-caption path)."""
    with ThreadPoolExecutor(max_workers=prefetch) as pool:
        pending = []
        for batch in batches:
            pending.append(pool.submit(preprocess, batch))
            if len(pending) > prefetch:
                yield checked(captioner, pending.pop(0).result())
        for fut in pending:
            yield checked(captioner, fut.result())
